"""Knowledge base: articles with PostgreSQL full-text search.

`kb_articles.tsv` is a stored generated column: title weighted A over body B, in the text
search configuration of the article's locale (english, german, french, spanish; simple for
any other). Search uses websearch_to_tsquery (quotes, OR, -exclusion), ranks with ts_rank and
computes ts_headline snippets only for the returned page. Without `locale` the query is
parsed in every configuration and each article is matched in its own."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match, decode_cursor, encode_cursor
from chassis.problems import NotFound, invalid
from crm.tickets.v1 import tickets_pb2 as pb
from tickets import events
from tickets.access import Caller

Row = dict[str, Any]
CONFIGS = {"en": "english", "de": "german", "fr": "french", "es": "spanish"}
ALL_CONFIGS = ("english", "german", "french", "spanish", "simple")
COLS = "id, title, body, tags, locale, status, created_at, updated_at, version"
HEADLINE = "StartSel=<mark>, StopSel=</mark>, MaxWords=35, MinWords=12, MaxFragments=2"


class ArticleNotFound(NotFound):
    title = "Article not found"


def ts_config(locale: str) -> str:
    return CONFIGS.get(locale.split("-")[0].lower(), "simple")


async def get(
    session: AsyncSession, caller: Caller, article_id: uuid.UUID, lock: bool = False
) -> Row:
    drafts = "" if caller.is_agent else " AND status = 'published'"
    row = (
        (
            await session.execute(
                text(
                    f"SELECT {COLS} FROM kb_articles WHERE tenant_id = :t AND id = :id "
                    f"AND deleted_at IS NULL{drafts}" + (" FOR UPDATE" if lock else "")
                ),
                {"t": caller.tenant, "id": article_id},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise ArticleNotFound(f"no article {article_id}")
    return dict(row)


async def list_articles(
    session: AsyncSession, caller: Caller, locale: str | None, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    where = ["tenant_id = :t", "deleted_at IS NULL"]
    params: dict[str, Any] = {"t": caller.tenant, "limit": limit + 1}
    if not caller.is_agent:
        where.append("status = 'published'")
    if locale:
        where.append("locale = :locale")
        params["locale"] = locale
    after = decode_cursor(cursor)
    if after is not None:
        try:
            params["c_at"] = datetime.fromisoformat(str(after["created_at"]))
            params["c_id"] = uuid.UUID(str(after["id"]))
        except (KeyError, ValueError):
            raise invalid("cursor", "not a cursor returned by this API") from None
        where.append("(created_at, id) > (:c_at, :c_id)")
    rows = [
        dict(r)
        for r in (
            await session.execute(
                text(
                    f"SELECT {COLS} FROM kb_articles WHERE {' AND '.join(where)} "
                    "ORDER BY created_at, id LIMIT :limit"
                ),
                params,
            )
        ).mappings()
    ]
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = encode_cursor(
            {"created_at": rows[-1]["created_at"].isoformat(), "id": str(rows[-1]["id"])}
        )
    return rows, nxt


def _emit(
    session: AsyncSession, caller: Caller, msg: Any, row: Row, changed: Sequence[str] = ()
) -> None:
    events.emit(
        session,
        msg,
        tenant=caller.tenant,
        aggregate_id=row["id"],
        version=row["version"],
        actor=caller.sub,
        origin=caller.origin,
        occurred_at=row["updated_at"],
        changed=changed,
    )


async def create(session: AsyncSession, caller: Caller, body: Any) -> Row:
    caller.require_agent()
    now = datetime.now(UTC)
    row = (
        (
            await session.execute(
                text(
                    "INSERT INTO kb_articles (tenant_id, id, title, body, tags, locale, ts_config, "
                    "status, created_by, created_at, updated_at, version) VALUES (:t, :id, :title, "
                    ":body, :tags, :locale, CAST(:cfg AS regconfig), :status, :by, :now, :now, 1) "
                    f"RETURNING {COLS}"
                ),
                {
                    "t": caller.tenant,
                    "id": uuid.uuid4(),
                    "title": body.title,
                    "body": body.body,
                    "tags": list(dict.fromkeys(body.tags)),
                    "locale": body.locale,
                    "cfg": ts_config(body.locale),
                    "status": body.status,
                    "by": caller.sub,
                    "now": now,
                },
            )
        )
        .mappings()
        .one()
    )
    out = dict(row)
    _emit(session, caller, pb.KbArticleCreated(article=events.article_message(out)), out)
    return out


async def update(
    session: AsyncSession, caller: Caller, article_id: uuid.UUID, patch: Any, if_match: str | None
) -> Row:
    caller.require_agent()
    current = await get(session, caller, article_id, lock=True)
    check_if_match(if_match, current["version"])
    values = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
    changed = [k for k, v in values.items() if current[k] != v]
    if not changed:
        return current
    new = {**current, **values}
    row = (
        (
            await session.execute(
                text(
                    "UPDATE kb_articles SET title = :title, body = :body, tags = :tags, "
                    "locale = :locale, ts_config = CAST(:cfg AS regconfig), status = :status, "
                    "updated_at = :now, version = version + 1 WHERE tenant_id = :t AND id = :id "
                    f"RETURNING {COLS}"
                ),
                {
                    **new,
                    "cfg": ts_config(new["locale"]),
                    "now": datetime.now(UTC),
                    "t": caller.tenant,
                },
            )
        )
        .mappings()
        .one()
    )
    out = dict(row)
    _emit(session, caller, pb.KbArticleUpdated(article=events.article_message(out)), out, changed)
    return out


async def delete(
    session: AsyncSession, caller: Caller, article_id: uuid.UUID, if_match: str | None
) -> None:
    caller.require_agent()
    current = await get(session, caller, article_id, lock=True)
    check_if_match(if_match, current["version"])
    now = datetime.now(UTC)
    await session.execute(
        text(
            "UPDATE kb_articles SET deleted_at = :now, updated_at = :now, version = version + 1 "
            "WHERE tenant_id = :t AND id = :id"
        ),
        {"now": now, "t": caller.tenant, "id": article_id},
    )
    _emit(
        session,
        caller,
        pb.KbArticleDeleted(),
        {"id": article_id, "version": current["version"] + 1, "updated_at": now},
    )


_SEARCH = """
WITH q AS (SELECT {query} AS query),
hits AS (
    SELECT a.id, a.title, a.body, a.locale, a.tags, a.ts_config,
           ts_rank(a.tsv, {rank_query}) AS rank
    FROM kb_articles a, q
    WHERE a.tenant_id = :t AND a.status = 'published' AND a.deleted_at IS NULL
      AND ({match}) {locale_filter}
    ORDER BY rank DESC, a.id
    LIMIT :limit OFFSET :offset
)
SELECT id, title, locale, tags, rank,
       ts_headline(ts_config, body, {rank_query_h}, :hl) AS snippet
FROM hits, q ORDER BY rank DESC, id
"""


async def search(
    session: AsyncSession,
    tenant: str,
    q: str,
    locale: str | None,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[Row], str | None]:
    """Published articles matching `q`, best first, with <mark>ed snippets. The cursor is the
    offset of the next page (ranks are not unique keys)."""
    after = decode_cursor(cursor)
    offset = 0
    if after is not None:
        raw = after.get("offset")
        offset = raw if isinstance(raw, int) else -1
        if not 0 <= offset <= 10_000:
            raise invalid("cursor", "not a cursor returned by this API")
    params: dict[str, Any] = {
        "t": tenant,
        "q": q,
        "limit": limit + 1,
        "offset": offset,
        "hl": HEADLINE,
    }
    if locale:
        params["cfg"] = ts_config(locale)
        params["locale"] = locale
        sql = _SEARCH.format(
            query="websearch_to_tsquery(CAST(:cfg AS regconfig), :q)",
            rank_query="q.query",
            match="a.tsv @@ q.query",
            locale_filter="AND (a.locale = :locale OR a.locale LIKE :locale || '-%')",
            rank_query_h="q.query",
        )
    else:
        ors = " OR ".join(f"a.tsv @@ websearch_to_tsquery('{c}', :q)" for c in ALL_CONFIGS)
        sql = _SEARCH.format(
            query="NULL::tsquery",
            rank_query="websearch_to_tsquery(a.ts_config, :q)",
            match=f"({ors}) AND a.tsv @@ websearch_to_tsquery(a.ts_config, :q)",
            locale_filter="",
            rank_query_h="websearch_to_tsquery(ts_config, :q)",
        )
    rows = [dict(r) for r in (await session.execute(text(sql), params)).mappings()]
    if len(rows) > limit:
        return rows[:limit], encode_cursor({"offset": offset + limit})
    return rows, None


_SUGGEST = """
WITH q AS (
    SELECT to_tsquery('simple', coalesce(string_agg(quote_literal(lex), ' | '), '')) AS query
    FROM (SELECT unnest(tsvector_to_array(to_tsvector(CAST(:cfg AS regconfig), :text))) AS lex
          LIMIT 64) l
),
hits AS (
    SELECT a.id, a.title, a.body, a.locale, a.tags, a.ts_config, ts_rank(a.tsv, q.query) AS rank
    FROM kb_articles a, q
    WHERE a.tenant_id = :t AND a.status = 'published' AND a.deleted_at IS NULL
      AND a.ts_config = CAST(:cfg AS regconfig) AND a.tsv @@ q.query
    ORDER BY rank DESC, a.id LIMIT :limit
)
SELECT id, title, locale, tags, rank, ts_headline(ts_config, body, q.query, :hl) AS snippet
FROM hits, q ORDER BY rank DESC, id
"""


async def suggest(
    session: AsyncSession, tenant: str, subject: str, description: str, locale: str, limit: int
) -> list[Row]:
    """Articles sharing the most (weighted) terms with the ticket's subject and description:
    the ticket's lexemes OR-ed, so any overlap counts and more overlap ranks higher."""
    rows = await session.execute(
        text(_SUGGEST),
        {
            "t": tenant,
            "cfg": ts_config(locale),
            "text": f"{subject}\n{description}",
            "limit": limit,
            "hl": HEADLINE,
        },
    )
    return [dict(r) for r in rows.mappings()]
