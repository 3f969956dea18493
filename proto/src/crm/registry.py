"""Registry of the CRM domain events: CloudEvents type <-> protobuf message class <-> subject.

Hand-written (``scripts/proto.sh gen`` keeps it). Add a line to ``EVENT_TYPES`` for every
new event message.

- ce-type ``crm.<context>.<aggregate>.<event>.v<major>``: ``crm.contacts.contact.created.v1``
- subject ``crm.<context>.<tenant>.<aggregate>.<event>``: ``crm.contacts.acme.contact.created``
- ce-dataschema, the message's full protobuf name: ``crm.contacts.v1.ContactCreated``
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

from google.protobuf.message import Message

from crm.campaigns.v1 import campaigns_pb2
from crm.commissions.v1 import commissions_pb2
from crm.contacts.v1 import contacts_pb2
from crm.customers.v1 import customers_pb2
from crm.pipeline.v1 import pipeline_pb2
from crm.tickets.v1 import tickets_pb2

__all__ = ["EVENT_TYPES", "ce_type_for", "message_type_for", "subject_for"]

EVENT_TYPES: Final[dict[str, type[Message]]] = {
    "crm.contacts.contact.created.v1": contacts_pb2.ContactCreated,
    "crm.contacts.contact.updated.v1": contacts_pb2.ContactUpdated,
    "crm.contacts.contact.deleted.v1": contacts_pb2.ContactDeleted,
    "crm.contacts.contact.merged.v1": contacts_pb2.ContactMerged,
    "crm.contacts.contact.erased.v1": contacts_pb2.ContactErased,
    "crm.contacts.company.created.v1": contacts_pb2.CompanyCreated,
    "crm.contacts.company.updated.v1": contacts_pb2.CompanyUpdated,
    "crm.contacts.company.deleted.v1": contacts_pb2.CompanyDeleted,
    "crm.contacts.custom_field.defined.v1": contacts_pb2.CustomFieldDefined,
    "crm.pipeline.team.created.v1": pipeline_pb2.TeamCreated,
    "crm.pipeline.team.updated.v1": pipeline_pb2.TeamUpdated,
    "crm.pipeline.team.deleted.v1": pipeline_pb2.TeamDeleted,
    "crm.pipeline.pipeline.created.v1": pipeline_pb2.PipelineCreated,
    "crm.pipeline.pipeline.updated.v1": pipeline_pb2.PipelineUpdated,
    "crm.pipeline.pipeline.deleted.v1": pipeline_pb2.PipelineDeleted,
    "crm.pipeline.deal.created.v1": pipeline_pb2.DealCreated,
    "crm.pipeline.deal.updated.v1": pipeline_pb2.DealUpdated,
    "crm.pipeline.deal.stage_changed.v1": pipeline_pb2.DealStageChanged,
    "crm.pipeline.deal.won.v1": pipeline_pb2.DealWon,
    "crm.pipeline.deal.lost.v1": pipeline_pb2.DealLost,
    "crm.pipeline.deal.reopened.v1": pipeline_pb2.DealReopened,
    "crm.pipeline.deal.deleted.v1": pipeline_pb2.DealDeleted,
    "crm.pipeline.order.upserted.v1": pipeline_pb2.OrderUpserted,
    "crm.pipeline.order.paid.v1": pipeline_pb2.OrderPaid,
    "crm.pipeline.order.refunded.v1": pipeline_pb2.OrderRefunded,
    "crm.pipeline.activity.logged.v1": pipeline_pb2.ActivityLogged,
    "crm.pipeline.activity.updated.v1": pipeline_pb2.ActivityUpdated,
    "crm.pipeline.activity.deleted.v1": pipeline_pb2.ActivityDeleted,
    "crm.pipeline.task.created.v1": pipeline_pb2.TaskCreated,
    "crm.pipeline.task.updated.v1": pipeline_pb2.TaskUpdated,
    "crm.pipeline.task.deleted.v1": pipeline_pb2.TaskDeleted,
    "crm.pipeline.task.reminder_due.v1": pipeline_pb2.TaskReminderDue,
    "crm.pipeline.task.overdue.v1": pipeline_pb2.TaskOverdue,
    "crm.commissions.quota.set.v1": commissions_pb2.QuotaSet,
    "crm.commissions.plan.changed.v1": commissions_pb2.PlanChanged,
    "crm.commissions.statement.updated.v1": commissions_pb2.StatementUpdated,
    "crm.commissions.period.closed.v1": commissions_pb2.PeriodClosed,
    "crm.commissions.dispute.opened.v1": commissions_pb2.DisputeOpened,
    "crm.commissions.dispute.resolved.v1": commissions_pb2.DisputeResolved,
    "crm.commissions.adjustment.booked.v1": commissions_pb2.AdjustmentBooked,
    "crm.tickets.ticket.created.v1": tickets_pb2.TicketCreated,
    "crm.tickets.ticket.updated.v1": tickets_pb2.TicketUpdated,
    "crm.tickets.ticket.status_changed.v1": tickets_pb2.TicketStatusChanged,
    "crm.tickets.ticket.assigned.v1": tickets_pb2.TicketAssigned,
    "crm.tickets.ticket.commented.v1": tickets_pb2.TicketCommented,
    "crm.tickets.ticket.solved.v1": tickets_pb2.TicketSolved,
    "crm.tickets.ticket.reopened.v1": tickets_pb2.TicketReopened,
    "crm.tickets.ticket.closed.v1": tickets_pb2.TicketClosed,
    "crm.tickets.group.created.v1": tickets_pb2.GroupCreated,
    "crm.tickets.group.updated.v1": tickets_pb2.GroupUpdated,
    "crm.tickets.group.deleted.v1": tickets_pb2.GroupDeleted,
    "crm.tickets.business_hours.created.v1": tickets_pb2.BusinessHoursCreated,
    "crm.tickets.business_hours.updated.v1": tickets_pb2.BusinessHoursUpdated,
    "crm.tickets.business_hours.deleted.v1": tickets_pb2.BusinessHoursDeleted,
    "crm.tickets.sla_policy.created.v1": tickets_pb2.SlaPolicyCreated,
    "crm.tickets.sla_policy.updated.v1": tickets_pb2.SlaPolicyUpdated,
    "crm.tickets.sla_policy.deleted.v1": tickets_pb2.SlaPolicyDeleted,
    "crm.tickets.sla.warning.v1": tickets_pb2.SlaWarning,
    "crm.tickets.sla.breached.v1": tickets_pb2.SlaBreached,
    "crm.tickets.kb_article.created.v1": tickets_pb2.KbArticleCreated,
    "crm.tickets.kb_article.updated.v1": tickets_pb2.KbArticleUpdated,
    "crm.tickets.kb_article.deleted.v1": tickets_pb2.KbArticleDeleted,
    "crm.tickets.csat_survey.requested.v1": tickets_pb2.CsatRequested,
    "crm.tickets.csat_survey.answered.v1": tickets_pb2.CsatAnswered,
    "crm.tickets.nps_survey.created.v1": tickets_pb2.NpsSurveyCreated,
    "crm.tickets.nps_invitation.invited.v1": tickets_pb2.NpsInvited,
    "crm.tickets.nps_invitation.answered.v1": tickets_pb2.NpsAnswered,
    "crm.campaigns.segment.changed.v1": campaigns_pb2.SegmentChanged,
    "crm.campaigns.contact_segments.changed.v1": campaigns_pb2.ContactSegmentsChanged,
    "crm.campaigns.email_template.changed.v1": campaigns_pb2.EmailTemplateChanged,
    "crm.campaigns.campaign.changed.v1": campaigns_pb2.CampaignChanged,
    "crm.campaigns.email.sent.v1": campaigns_pb2.EmailSent,
    "crm.campaigns.email.delivered.v1": campaigns_pb2.EmailDelivered,
    "crm.campaigns.email.bounced.v1": campaigns_pb2.EmailBounced,
    "crm.campaigns.email.opened.v1": campaigns_pb2.EmailOpened,
    "crm.campaigns.email.clicked.v1": campaigns_pb2.EmailClicked,
    "crm.campaigns.email.unsubscribed.v1": campaigns_pb2.EmailUnsubscribed,
    "crm.campaigns.consent.withdrawn.v1": campaigns_pb2.ConsentWithdrawn,
    "crm.campaigns.lead.qualified.v1": campaigns_pb2.LeadQualified,
    "crm.campaigns.lead.captured.v1": campaigns_pb2.LeadCaptured,
    "crm.campaigns.touchpoint.recorded.v1": campaigns_pb2.TouchpointRecorded,
    "crm.campaigns.scoring_model.changed.v1": campaigns_pb2.ScoringModelChanged,
    "crm.campaigns.lead_score.changed.v1": campaigns_pb2.LeadScoreChanged,
    "crm.campaigns.loyalty_program.changed.v1": campaigns_pb2.LoyaltyProgramChanged,
    "crm.campaigns.loyalty_member.points_earned.v1": campaigns_pb2.PointsEarned,
    "crm.campaigns.loyalty_member.points_redeemed.v1": campaigns_pb2.PointsRedeemed,
    "crm.campaigns.loyalty_member.points_reversed.v1": campaigns_pb2.PointsReversed,
    "crm.campaigns.loyalty_member.points_expired.v1": campaigns_pb2.PointsExpired,
    "crm.campaigns.loyalty_member.tier_changed.v1": campaigns_pb2.TierChanged,
    "crm.campaigns.loyalty_member.merged.v1": campaigns_pb2.LoyaltyMemberMerged,
    "crm.campaigns.sequence.changed.v1": campaigns_pb2.SequenceChanged,
    "crm.campaigns.enrollment.changed.v1": campaigns_pb2.EnrollmentChanged,
    "crm.campaigns.sequence_task.requested.v1": campaigns_pb2.SequenceTaskRequested,
    "crm.campaigns.contact_tag.requested.v1": campaigns_pb2.ContactTagRequested,
    "crm.customers.customer.health_changed.v1": customers_pb2.HealthChanged,
    "crm.customers.customer.churn_risk_raised.v1": customers_pb2.ChurnRiskRaised,
    "crm.customers.webhook_subscription.disabled.v1": customers_pb2.WebhookSubscriptionDisabled,
}
"""ce-type -> protobuf message class of every event published on NATS."""

# Keyed by the full protobuf name rather than the class, so that an instance built from
# another class of the same message (e.g. a dynamic message) still resolves.
_CE_TYPE_BY_FULL_NAME: Final = MappingProxyType(
    {cls.DESCRIPTOR.full_name: ce_type for ce_type, cls in EVENT_TYPES.items()}
)

_CE_TYPE = re.compile(
    r"crm\.(?P<context>[a-z][a-z0-9_]*)\.(?P<aggregate>[a-z][a-z0-9_]*)"
    r"\.(?P<event>[a-z][a-z0-9_]*)\.v[1-9][0-9]*"
)
# Tenant ids are slugs (ARCHITECTURE.md, tenancy): safe as one NATS subject token.
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def subject_for(ce_type: str, tenant: str) -> str:
    """NATS subject of an event: ``crm.contacts.contact.created.v1`` + ``acme`` ->
    ``crm.contacts.acme.contact.created``.

    Raises ``ValueError`` for a malformed ce-type or tenant id.
    """
    match = _CE_TYPE.fullmatch(ce_type)
    if match is None:
        raise ValueError(
            f"malformed ce-type {ce_type!r}: expected crm.<context>.<aggregate>.<event>.v<N>"
        )
    if _TENANT.fullmatch(tenant) is None:
        raise ValueError(
            f"malformed tenant id {tenant!r}: expected a slug [a-z0-9][a-z0-9-]{{0,62}}"
        )
    return f"crm.{match['context']}.{tenant}.{match['aggregate']}.{match['event']}"


def ce_type_for(message: Message | type[Message]) -> str:
    """ce-type of an event message (instance or class), e.g. ``crm.contacts.contact.created.v1``.

    Raises ``KeyError`` when the message is not a registered event.
    """
    full_name = message.DESCRIPTOR.full_name
    try:
        return _CE_TYPE_BY_FULL_NAME[full_name]
    except KeyError:
        raise KeyError(f"{full_name} is not a registered event message") from None


def message_type_for(ce_type: str) -> type[Message]:
    """Message class of a ce-type, for decoding a received event.

    Raises ``KeyError`` for an unknown ce-type.
    """
    try:
        return EVENT_TYPES[ce_type]
    except KeyError:
        raise KeyError(f"unknown ce-type {ce_type!r}") from None
