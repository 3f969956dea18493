"""Domain errors; each becomes an RFC 9457 problem via the chassis handler."""

from __future__ import annotations

from chassis.problems import Conflict, Forbidden, NotFound


class PlanNotFound(NotFound):
    def __init__(self, plan_id: object) -> None:
        super().__init__(f"commission plan {plan_id} not found")


class StatementNotFound(NotFound):
    def __init__(self, statement_id: object) -> None:
        super().__init__(f"statement {statement_id} not found")


class DisputeNotFound(NotFound):
    def __init__(self, dispute_id: object) -> None:
        super().__init__(f"dispute {dispute_id} not found")


class AdjustmentNotFound(NotFound):
    def __init__(self, adjustment_id: object) -> None:
        super().__init__(f"adjustment {adjustment_id} not found")


class QuotaNotFound(NotFound):
    def __init__(self, owner: str, period: str) -> None:
        super().__init__(f"no quota for {owner} in {period}")


class TeamNotFound(NotFound):
    def __init__(self, team_id: object) -> None:
        super().__init__(f"team {team_id} not found")


class PeriodClosed(Conflict):
    def __init__(self, period: str) -> None:
        super().__init__(
            f"period {period} is closed: book adjustments into an open period", period=period
        )


class PeriodAlreadyClosed(Conflict):
    def __init__(self, period: str) -> None:
        super().__init__(f"period {period} is already closed", period=period)


class InvalidTransition(Conflict):
    def __init__(self, what: str, current: str, wanted: str) -> None:
        super().__init__(f"{what} is {current}; it cannot become {wanted}", status_now=current)


class NotYourManager(Forbidden):
    def __init__(self, action: str) -> None:
        super().__init__(f"only a manager of the user (or an admin) may {action}")
