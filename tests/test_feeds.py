"""The order feeds' pages and cursors, and the transactional page store.

Pages are built from the sandbox's order generator (the marketplaces' own
example objects, fitted to their schemas) and checked against the schemas of
``specs/`` before a feed reads them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from sqlalchemy import func, select

from mpshield.db.engine import get_sessionmaker, session_scope
from mpshield.db.models import Order, Shop, SyncState
from mpshield.exceptions import ConfigurationError, MalformedResponseError
from mpshield.jobs import store
from mpshield.jobs.feeds import (
    OzonFboFeed,
    OzonFbsFeed,
    WbFbsFeed,
    WbStatsFeed,
    feeds_for,
)
from mpshield.jobs.feeds.base import MSK, Feed
from mpshield.sandbox.world import World
from mpshield.settings import Settings

SPECS = Path(__file__).resolve().parents[1] / "specs"
NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


@functools.cache
def spec(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (SPECS / name).read_text(encoding="utf-8"), object_hook=_drop_date_pictures
    )
    return data


def _drop_date_pictures(node: dict[str, Any]) -> dict[str, Any]:
    # The swagger writes a few dates' "pattern" as a picture (" YYYY-MM-DD..."),
    # not a regular expression; "format: date-time" already says what it means.
    pattern = node.get("pattern")
    if isinstance(pattern, str) and "YYYY" in pattern:
        node = {key: value for key, value in node.items() if key != "pattern"}
    return node


def validate(document: str, schema_name: str, instance: Any) -> None:
    """Check ``instance`` against ``#/components/schemas/<schema_name>``."""
    root = {
        "$ref": f"#/components/schemas/{schema_name}",
        "components": spec(document)["components"],
    }
    OAS30Validator(root).validate(instance)


@pytest.fixture(name="world", scope="module")
def world_fixture() -> World:
    """A sandbox world with one WB and one Ozon seller, never started."""
    return World(seed=7)


@pytest.fixture(name="wb_truth", scope="module")
def wb_truth_fixture(world: World) -> dict[str, list[dict[str, Any]]]:
    sid = world.wb_create_seller(orders=40)
    world.change_statuses(sid, 10)
    return world.truth(sid)


@pytest.fixture(name="ozon_truth", scope="module")
def ozon_truth_fixture(world: World) -> dict[str, list[dict[str, Any]]]:
    client_id, _ = world.ozon_create_seller(orders=40)
    world.change_statuses(client_id, 10)
    return world.truth(client_id)


def stats_rows(truth: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The statistics rows in WB's page order (by lastChangeDate)."""
    return sorted(truth["wb_stats"], key=lambda row: str(row["lastChangeDate"]))


class TestRegistry:
    def test_each_marketplace_has_two_feeds(self) -> None:
        """WB syncs wb_fbs and wb_stats, Ozon ozon_fbs and ozon_fbo."""
        assert [feed.name for feed in feeds_for("wb")] == ["wb_fbs", "wb_stats"]
        assert [feed.name for feed in feeds_for("ozon")] == ["ozon_fbs", "ozon_fbo"]

    def test_other_marketplace_names_are_ignored(self) -> None:
        """A --feed list may name both marketplaces' feeds."""
        assert [feed.name for feed in feeds_for("ozon", ["wb_stats", "ozon_fbo"])] == [
            "ozon_fbo"
        ]

    def test_unknown_feed_is_a_configuration_error(self) -> None:
        """A misspelt feed name fails before anything is sent."""
        with pytest.raises(ConfigurationError, match="wb_fbz"):
            feeds_for("wb", ["wb_fbz"])


class TestWbFbs:
    def test_sandbox_orders_match_the_spec_and_are_read(
        self, wb_truth: dict[str, list[dict[str, Any]]]
    ) -> None:
        """Orders valid by the spec's Order schema become records keyed by id."""
        rows = wb_truth["wb_fbs"]
        for row in rows:
            validate("wb-orders-fbs.json", "Order", row)
        feed = WbFbsFeed()
        cursor = feed.begin(None, NOW)

        page = feed.read({"next": 987654321, "orders": rows}, cursor, NOW)

        assert [order.external_id for order in page.orders] == [
            str(r["id"]) for r in rows
        ]
        first = page.orders[0]
        assert first.payload is rows[0]
        assert first.price == Decimal(rows[0]["price"]) / 100
        assert first.currency == "RUB"
        assert first.order_created_at is not None
        assert first.order_created_at.tzinfo is not None
        assert page.more and page.cursor["next"] == 987654321

    def test_next_is_echoed_verbatim(self) -> None:
        """The request carries exactly the next of the previous answer."""
        feed = WbFbsFeed(page_size=2)
        cursor = feed.begin(None, NOW)
        assert feed.request(cursor).params == {
            "limit": 2,
            "next": 0,
            "dateFrom": cursor["window_start"],
            "dateTo": cursor["window_end"],
        }

        page = feed.read({"next": 5, "orders": [{"id": 9}]}, cursor, NOW)
        page = feed.read({"next": 3, "orders": [{"id": 11}]}, page.cursor, NOW)

        assert feed.request(page.cursor).params["next"] == 3  # type: ignore[index]

    def test_windows_walk_to_now_in_thirty_days(self) -> None:
        """A long gap is read in windows of at most 30 days, ending at now."""
        feed = WbFbsFeed(lookback=dt.timedelta(days=80))
        cursor = feed.begin(None, NOW)
        windows = []
        while True:
            windows.append((cursor["window_start"], cursor["window_end"]))
            page = feed.read({"next": cursor["next"], "orders": []}, cursor, NOW)
            if not page.more:
                break
            cursor = page.cursor

        assert len(windows) == 3
        assert all(end - start <= 30 * 86400 for start, end in windows)
        assert windows[-1][1] == int(NOW.timestamp())
        assert page.cursor == {
            "window_start": int(NOW.timestamp()) - 3600,
            "window_end": None,
            "next": 0,
        }

    def test_later_run_starts_with_overlap_and_resumes_in_window(self) -> None:
        """A finished walk restarts an hour back; one in progress keeps its bounds."""
        feed = WbFbsFeed()
        later = NOW + dt.timedelta(hours=2)
        rest = {
            "window_start": int(NOW.timestamp()) - 3600,
            "window_end": None,
            "next": 0,
        }
        busy = {"window_start": 100, "window_end": 200, "next": 77}

        assert feed.begin(rest, later) == {
            "window_start": int(NOW.timestamp()) - 3600,
            "window_end": int(later.timestamp()),
            "next": 0,
        }
        assert feed.begin(busy, NOW)["window_end"] == 200
        # Older than three months: WB no longer lists it, so start there.
        assert (
            feed.begin(busy, NOW)["window_start"] == int(NOW.timestamp()) - 90 * 86400
        )

    @pytest.mark.parametrize(
        "body",
        [
            "<html>502 Bad Gateway</html>",
            {"orders": [{"id": 1}]},
            {"next": 1},
            {"next": 1, "orders": [{}]},
        ],
    )
    def test_malformed_pages_are_typed_errors(self, body: Any) -> None:
        """A page without the documented shape raises MalformedResponseError."""
        feed = WbFbsFeed()
        with pytest.raises(MalformedResponseError):
            feed.read(body, feed.begin(None, NOW), NOW)


class TestWbStats:
    def test_sandbox_rows_match_the_spec_and_are_read(
        self, wb_truth: dict[str, list[dict[str, Any]]]
    ) -> None:
        """Rows valid by OrdersItem become records keyed by srid, dates in UTC."""
        rows = stats_rows(wb_truth)
        for row in rows:
            validate("wb-reports.json", "OrdersItem", row)
        feed = WbStatsFeed()
        cursor = feed.begin(None, NOW)

        page = feed.read(rows, cursor, NOW)

        assert sorted(o.external_id for o in page.orders) == sorted(
            r["srid"] for r in rows
        )
        record = next(o for o in page.orders if o.external_id == rows[0]["srid"])
        created = dt.datetime.fromisoformat(rows[0]["date"]).replace(tzinfo=MSK)
        assert record.order_created_at == created.astimezone(dt.UTC)
        assert record.status in ("ordered", "cancelled")
        assert page.cursor["date_from"] == rows[-1]["lastChangeDate"]

    def test_first_request_is_moscow_time_with_flag_zero(self) -> None:
        """dateFrom is written in Moscow time without an offset."""
        feed = WbStatsFeed(lookback=dt.timedelta(days=1))
        request = feed.request(feed.begin(None, NOW))
        assert request.params == {"dateFrom": "2026-12-03T15:00:00", "flag": 0}

    def test_boundary_repeats_end_the_run(self) -> None:
        """A page of nothing but the rows at the cursor's timestamp means done."""
        feed = WbStatsFeed()
        rows = [
            {"srid": "a", "lastChangeDate": "2026-12-01T10:00:00"},
            {"srid": "b", "lastChangeDate": "2026-12-01T10:00:05"},
            {"srid": "c", "lastChangeDate": "2026-12-01T10:00:05"},
        ]
        page = feed.read(rows, feed.begin(None, NOW), NOW)
        assert page.cursor == {
            "date_from": "2026-12-01T10:00:05",
            "boundary": ["b", "c"],
        }

        repeat = feed.read(rows[1:], page.cursor, NOW)
        empty = feed.read([], page.cursor, NOW)

        assert repeat.orders == [] and not repeat.more
        assert empty.orders == [] and not empty.more
        assert repeat.cursor == {**page.cursor, "complete": True}

    def test_new_rows_at_the_boundary_go_on(self) -> None:
        """A row arriving at the boundary timestamp is read and joins the boundary."""
        feed = WbStatsFeed()
        cursor = {"date_from": "2026-12-01T10:00:05", "boundary": ["b"]}
        rows = [
            {"srid": "b", "lastChangeDate": "2026-12-01T10:00:05"},
            {"srid": "d", "lastChangeDate": "2026-12-01T10:00:05"},
        ]

        page = feed.read(rows, cursor, NOW)

        assert [o.external_id for o in page.orders] == ["d"]
        assert page.more and page.cursor["boundary"] == ["b", "d"]

    def test_redelivered_row_keeps_the_newest(self) -> None:
        """Two copies of one srid in a page yield the later lastChangeDate."""
        feed = WbStatsFeed()
        rows = [
            {"srid": "a", "lastChangeDate": "2026-12-01T10:00:00", "isCancel": False},
            {"srid": "a", "lastChangeDate": "2026-12-01T11:00:00", "isCancel": True},
            {"srid": "z", "lastChangeDate": "2026-12-01T12:00:00"},
        ]

        page = feed.read(rows, feed.begin(None, NOW), NOW)

        assert [(o.external_id, o.status) for o in page.orders] == [
            ("a", "cancelled"),
            ("z", "ordered"),
        ]

    def test_later_run_starts_an_hour_back(self) -> None:
        """Data refreshed late are read again: the run starts before the cursor."""
        feed = WbStatsFeed()
        stored = {
            "date_from": "2026-12-04T14:30:00",
            "boundary": ["x"],
            "complete": True,
        }
        assert feed.begin(stored, NOW) == {
            "date_from": "2026-12-04T13:30:00",
            "boundary": [],
        }

    def test_a_run_cut_short_resumes_exactly(self) -> None:
        """After a rate limit the next run asks from the stored cursor itself."""
        feed = WbStatsFeed()
        stored = {"date_from": "2026-12-04T14:30:00", "boundary": ["x"]}
        assert feed.begin(stored, NOW) == stored

    def test_not_a_list_is_malformed(self) -> None:
        """An HTML page or an object instead of rows raises MalformedResponseError."""
        feed = WbStatsFeed()
        bodies: list[Any] = ["<html></html>", {"rows": []}, [{"srid": "a"}]]
        for body in bodies:
            with pytest.raises(MalformedResponseError):
                feed.read(body, feed.begin(None, NOW), NOW)


class TestOzon:
    @pytest.mark.parametrize(
        ("feed", "key", "schema"),
        [
            (OzonFbsFeed(), "ozon_fbs", "posting.v4.PostingFbsList"),
            (OzonFboFeed(), "ozon_fbo", "posting.v3.PostingFboList"),
        ],
    )
    def test_requests_and_pages_match_the_spec(
        self,
        feed: Feed,
        key: str,
        schema: str,
        ozon_truth: dict[str, list[dict[str, Any]]],
    ) -> None:
        """Request bodies and sandbox pages are valid by the swagger; pages are read."""
        postings = ozon_truth[key]
        body = {"cursor": "abc", "has_next": True, "postings": postings}
        cursor = feed.begin(None, NOW)
        request = feed.request(cursor)
        validate("ozon-seller-swagger.json", schema + "Request", request.json)
        validate("ozon-seller-swagger.json", schema + "Response", body)

        page = feed.read(body, cursor, NOW)

        assert [o.external_id for o in page.orders] == [
            p["posting_number"] for p in postings
        ]
        assert [o.status for o in page.orders] == [p["status"] for p in postings]
        record, posting = page.orders[0], postings[0]
        amount = sum(
            Decimal(item["price"]["amount"]) * item["quantity"]
            for item in posting["products"]
        )
        assert record.price == amount and record.currency == "RUB"
        assert record.order_created_at is not None
        assert page.more and page.cursor["cursor"] == "abc"

    def test_last_page_rests_and_later_fbs_runs_filter_on_changes(self) -> None:
        """After has_next false, the next FBS run asks for status changes since."""
        feed = OzonFbsFeed()
        cursor = feed.begin(None, NOW)
        done = feed.read({"cursor": "", "has_next": False, "postings": []}, cursor, NOW)
        assert not done.more and done.cursor == {
            "synced_to": "2026-12-04T12:00:00.000Z"
        }

        later = feed.begin(done.cursor, NOW + dt.timedelta(hours=1))
        body = feed.request(later).json or {}

        assert body["filter"]["last_changed_status_date"] == {
            "from": "2026-12-04T11:50:00.000Z",
            "to": "2026-12-04T13:00:00.000Z",
        }
        since = dt.datetime.fromisoformat(body["filter"]["since"])
        assert NOW - since > dt.timedelta(days=360)

    def test_the_present_ends_the_walk_despite_microseconds(self) -> None:
        """A period ending at now (written to the millisecond) is the last one."""
        feed = OzonFboFeed()
        now = NOW.replace(microsecond=123456)
        cursor = feed.begin(None, now)

        page = feed.read({"cursor": "", "has_next": False, "postings": []}, cursor, now)

        assert not page.more

    def test_later_fbo_runs_list_the_refresh_span(self) -> None:
        """FBO has no status-change filter: later runs list the last 30 days again."""
        feed = OzonFboFeed()
        cursor = feed.begin({"synced_to": "2026-12-04T11:00:00.000Z"}, NOW)
        assert cursor["since"] == "2026-11-04T12:00:00.000Z"
        assert cursor["changed_from"] is None

    def test_a_period_over_a_year_is_split(self) -> None:
        """Ozon refuses periods over a year, so a long gap is walked in years."""
        feed = OzonFboFeed(
            lookback=dt.timedelta(days=400), refresh=dt.timedelta(days=400)
        )
        cursor = feed.begin({"synced_to": "2025-10-01T00:00:00.000Z"}, NOW)
        first_end = dt.datetime.fromisoformat(cursor["window_end"])
        assert first_end < NOW

        page = feed.read({"cursor": "", "has_next": False, "postings": []}, cursor, NOW)

        assert page.more and page.cursor["since"] == cursor["window_end"]

    def test_resume_keeps_the_period_of_the_cursor(self) -> None:
        """A stored Ozon cursor is only sent with the filter it came from."""
        feed = OzonFbsFeed()
        busy = {"since": "a", "window_end": "b", "cursor": "xyz", "changed_from": None}
        assert feed.begin(busy, NOW) == busy

    def test_a_walk_between_periods_goes_on(self) -> None:
        """A run stopped between two yearly periods resumes at the next one."""
        feed = OzonFboFeed()
        between = {
            "since": "2025-06-01T00:00:00.000Z",
            "window_end": "2026-05-31T23:59:00.000Z",
            "cursor": "",
            "changed_from": None,
        }
        assert feed.begin(between, NOW)["since"] == "2025-06-01T00:00:00.000Z"

    @pytest.mark.parametrize(
        "body",
        [
            "<html></html>",
            {"postings": []},
            {"has_next": True, "postings": [], "cursor": ""},
            {"has_next": False, "postings": [{"status": "x"}]},
        ],
    )
    def test_malformed_pages_are_typed_errors(self, body: Any) -> None:
        """Missing keys, a cursor-less has_next or a posting without number fail."""
        feed = OzonFbsFeed()
        with pytest.raises(MalformedResponseError):
            feed.read(body, feed.begin(None, NOW), NOW)


# ---------------------------------------------------------------- the store


@pytest.fixture(name="shop_id")
async def shop_id_fixture(db_ready: Settings) -> int:
    async with session_scope(db_ready) as session:
        shop = Shop(marketplace="wb", name="store test", api_key="x.y.z")
        session.add(shop)
        await session.flush()
        return shop.id


async def stored(settings: Settings, shop_id: int, feed: str) -> dict[str, Any]:
    async with session_scope(settings) as session:
        rows = await session.execute(
            select(Order.external_id, Order.status, Order.payload).where(
                Order.shop_id == shop_id, Order.feed == feed
            )
        )
        return {ident: (status, payload) for ident, status, payload in rows}


async def cursor_of(
    settings: Settings, shop_id: int, feed: str
) -> dict[str, Any] | None:
    return await store.load_cursor(get_sessionmaker(settings), shop_id, feed)


def stats_row(srid: str, changed: str, cancel: bool = False) -> dict[str, Any]:
    return {
        "srid": srid,
        "lastChangeDate": changed,
        "date": changed,
        "isCancel": cancel,
    }


class TestStore:
    async def test_page_and_cursor_commit_together(
        self, db_ready: Settings, shop_id: int
    ) -> None:
        """Orders are inserted once, counted as new, and the cursor is stored."""
        feed = WbStatsFeed()
        orders = feed.read(
            [
                stats_row("a", "2026-12-01T10:00:00"),
                stats_row("b", "2026-12-01T10:00:01"),
            ],
            feed.begin(None, NOW),
            NOW,
        )
        sessions = get_sessionmaker(db_ready)

        first = await store.save_page(
            sessions,
            shop_id=shop_id,
            feed=feed,
            orders=orders.orders,
            cursor=orders.cursor,
            finished=False,
            now=NOW,
        )
        again = await store.save_page(
            sessions,
            shop_id=shop_id,
            feed=feed,
            orders=orders.orders,
            cursor=orders.cursor,
            finished=True,
            now=NOW,
        )

        assert (first.new, first.updated) == (2, 0)
        assert (again.new, again.updated) == (0, 0)
        assert set(await stored(db_ready, shop_id, "wb_stats")) == {"a", "b"}
        assert await cursor_of(db_ready, shop_id, "wb_stats") == orders.cursor

    async def test_newer_row_updates_and_older_never_regresses(
        self, db_ready: Settings, shop_id: int
    ) -> None:
        """A re-delivery with a later lastChangeDate wins; an older copy is ignored."""
        feed = WbStatsFeed()
        sessions = get_sessionmaker(db_ready)

        async def put(row: dict[str, Any]) -> store.PageCounts:
            return await store.save_page(
                sessions,
                shop_id=shop_id,
                feed=feed,
                orders=[feed.record(row)],
                cursor={"date_from": row["lastChangeDate"]},
                finished=False,
                now=NOW,
            )

        await put(stats_row("a", "2026-12-01T10:00:00"))
        newer = await put(stats_row("a", "2026-12-01T12:00:00", cancel=True))
        older = await put(stats_row("a", "2026-12-01T11:00:00"))

        assert (newer.new, newer.updated) == (0, 1)
        assert (older.new, older.updated) == (0, 0)
        status, payload = (await stored(db_ready, shop_id, "wb_stats"))["a"]
        assert status == "cancelled"
        assert payload["lastChangeDate"] == "2026-12-01T12:00:00"

    async def test_status_change_updates_an_ozon_posting(
        self, db_ready: Settings, shop_id: int
    ) -> None:
        """Without a version field any different row replaces the stored one."""
        feed = OzonFbsFeed()
        sessions = get_sessionmaker(db_ready)
        posting = {
            "posting_number": "1-1",
            "status": "awaiting_packaging",
            "products": [],
        }
        moved = {**posting, "status": "delivering"}

        for row in (posting, moved):
            counts = await store.save_page(
                sessions,
                shop_id=shop_id,
                feed=feed,
                orders=[feed.record(row)],
                cursor={"synced_to": "x"},
                finished=True,
                now=NOW,
            )

        assert (counts.new, counts.updated) == (0, 1)
        assert (await stored(db_ready, shop_id, "ozon_fbs"))["1-1"][0] == "delivering"

    async def test_failure_inside_the_transaction_stores_nothing(
        self, db_ready: Settings, shop_id: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the cursor write fails, the page's orders are rolled back too."""
        feed = WbFbsFeed()
        sessions = get_sessionmaker(db_ready)
        page = feed.read({"next": 1, "orders": [{"id": 5}]}, feed.begin(None, NOW), NOW)

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("crash between the orders and the cursor")

        monkeypatch.setattr(store, "_write_cursor", broken)
        with pytest.raises(RuntimeError):
            await store.save_page(
                sessions,
                shop_id=shop_id,
                feed=feed,
                orders=page.orders,
                cursor=page.cursor,
                finished=False,
                now=NOW,
            )

        assert await stored(db_ready, shop_id, "wb_fbs") == {}
        assert await cursor_of(db_ready, shop_id, "wb_fbs") is None

    async def test_large_pages_are_written_in_chunks(
        self, db_ready: Settings, shop_id: int
    ) -> None:
        """A page above the statement chunk size is stored whole."""
        feed = WbFbsFeed()
        rows = [{"id": ident} for ident in range(store.CHUNK * 2 + 7)]
        page = feed.read({"next": 1, "orders": rows}, feed.begin(None, NOW), NOW)

        counts = await store.save_page(
            get_sessionmaker(db_ready),
            shop_id=shop_id,
            feed=feed,
            orders=page.orders,
            cursor=page.cursor,
            finished=False,
            now=NOW,
        )

        assert counts.new == len(rows)
        async with session_scope(db_ready) as session:
            total = await session.scalar(select(func.count()).select_from(Order))
        assert total == len(rows)

    async def test_failure_note_keeps_the_cursor(
        self, db_ready: Settings, shop_id: int
    ) -> None:
        """Recording an error sets next_attempt_at and last_error, not the cursor."""
        sessions = get_sessionmaker(db_ready)
        feed = WbFbsFeed()
        await store.save_page(
            sessions,
            shop_id=shop_id,
            feed=feed,
            orders=[],
            cursor={"next": 4},
            finished=True,
            now=NOW,
        )
        retry_at = NOW + dt.timedelta(minutes=5)

        await store.record_failure(
            sessions, shop_id, "wb_fbs", error="429", next_attempt_at=retry_at, now=NOW
        )

        async with session_scope(db_ready) as session:
            state = await session.get(SyncState, (shop_id, "wb_fbs"))
            assert state is not None
            assert state.cursor == {"next": 4}
            assert state.last_error == "429"
            assert state.next_attempt_at is not None
            assert state.next_attempt_at.replace(tzinfo=dt.UTC) == retry_at
