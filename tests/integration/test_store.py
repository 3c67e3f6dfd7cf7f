"""The measurement store against a real database: SQLite always, PostgreSQL when configured."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from conftest import small_dataset

from features import store
from features.dataset import KEYS, TABLES, Dataset, canonical, empty_dataset


def in_key_order(dataset: Dataset) -> Dataset:
    """The dataset as `load` returns it: every table sorted by its key."""
    return Dataset(
        **{name: frame.sort_values(list(KEYS[name]), ignore_index=True) for name, frame in dataset.tables().items()}
    )


def assert_same(actual: Dataset, expected: Dataset) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(actual.table(name), expected.table(name), obj=name)


def with_rows(dataset: Dataset, name: str, rows: list[dict]) -> Dataset:
    """The dataset with rows appended to one table."""
    frame = pd.concat([dataset.table(name), pd.DataFrame(rows)], ignore_index=True)
    return replace(dataset, **{name: canonical(name, frame)})


def with_value(dataset: Dataset, name: str, key: tuple, column: str, value: object) -> Dataset:
    """The dataset with one cell changed, in the row with this natural key."""
    frame = dataset.table(name).copy()
    row = (frame[list(KEYS[name])].apply(tuple, axis=1) == key).to_numpy()
    assert row.sum() == 1
    frame.loc[row, column] = value
    return replace(dataset, **{name: canonical(name, frame)})


def counts(summary: store.IngestSummary) -> dict[str, tuple[int, int]]:
    return {name: (summary.added[name], summary.updated[name]) for name in TABLES}


NOTHING = {name: (0, 0) for name in TABLES}


def test_a_new_store_loads_as_an_empty_dataset(store_url):
    assert_same(store.load(store_url), empty_dataset())
    assert_same(store.load(store_url, ["c10"]), empty_dataset())
    assert store.citizen_ids(store_url) == []
    assert store.ingests(store_url) == []


def test_load_gives_back_what_was_ingested(store_url, dataset):
    summary = store.ingest(dataset, store_url)

    assert counts(summary) == {name: (len(frame), 0) for name, frame in dataset.tables().items()}
    assert_same(store.load(store_url), in_key_order(dataset))
    assert_same(dataset, small_dataset())  # the caller's frames are left alone


def test_a_dataset_not_yet_in_canonical_dtypes_is_stored_canonically(store_url, dataset):
    raw = Dataset(
        **{
            name: frame.astype(object).assign(extra="ignored").iloc[::-1]  # object columns, an extra column, any order
            for name, frame in dataset.tables().items()
        }
    )

    store.ingest(raw, store_url)

    assert_same(store.load(store_url), in_key_order(dataset))


def test_ingesting_the_same_export_again_changes_nothing(store_url, dataset):
    store.ingest(dataset, store_url)
    summary = store.ingest(dataset, store_url)

    assert counts(summary) == NOTHING
    assert not summary.changed
    assert_same(store.load(store_url), in_key_order(dataset))


def test_summary_prints_added_and_updated_per_table(store_url, dataset):
    text = str(store.ingest(dataset, store_url))

    assert "measurements   added 4, updated 0" in text
    assert len(text.splitlines()) == len(TABLES)


def test_a_new_measurement_round_is_added(store_url, dataset):
    store.ingest(dataset, store_url)
    later = with_rows(
        dataset,
        "measurements",
        [{"measurement_id": "m5", "citizen_id": "c2", "caseworker_id": "cw-2", "measured_on": "2014-04-10"}],
    )

    summary = store.ingest(later, store_url)

    assert counts(summary) == {**NOTHING, "measurements": (1, 0)}
    assert_same(store.load(store_url), in_key_order(later))


def test_a_new_intervention_and_a_closed_one_are_applied(store_url, dataset):
    store.ingest(dataset, store_url)
    later = with_value(
        dataset, "interventions", ("c10", "wage_subsidy", pd.Timestamp("2013-08-01")), "ended_on", "2014-01-31"
    )
    later = with_rows(
        later, "interventions", [{"citizen_id": "c10", "intervention": "mentor", "started_on": "2014-03-01"}]
    )  # the same intervention again, a new episode

    summary = store.ingest(later, store_url)

    assert counts(summary) == {**NOTHING, "interventions": (1, 1)}
    assert_same(store.load(store_url), in_key_order(later))


def test_an_outcome_that_happened_since_is_updated(store_url, dataset):
    store.ingest(dataset, store_url)
    key = ("C2",)
    later = with_value(dataset, "outcomes", key, "event", "job")
    later = with_value(later, "outcomes", key, "event_on", "2017-02-01")
    later = with_value(later, "outcomes", key, "followed_until", "2017-06-30")

    summary = store.ingest(later, store_url)

    assert counts(summary) == {**NOTHING, "outcomes": (0, 1)}
    stored = store.load(store_url).outcomes.set_index("citizen_id")
    assert stored.loc["C2", "event"] == "job"
    assert stored.loc["C2", "event_on"] == pd.Timestamp("2017-02-01")
    assert stored.loc["c10", "followed_until"] == pd.Timestamp("2016-12-31")


def test_changed_citizen_and_caseworker_attributes_are_updated(store_url, dataset):
    store.ingest(dataset, store_url)
    later = with_value(dataset, "citizens", ("c2",), "children", 2)
    later = with_value(later, "caseworkers", ("cw-2",), "job_orientation", 4.25)  # was empty
    later = with_value(later, "measurements", ("m3",), "cw_self_efficacy", 2)  # was empty

    summary = store.ingest(later, store_url)

    assert counts(summary) == {**NOTHING, "citizens": (0, 1), "caseworkers": (0, 1), "measurements": (0, 1)}
    assert_same(store.load(store_url), in_key_order(later))


def test_a_value_cleared_in_a_later_export_is_updated(store_url, dataset):
    store.ingest(dataset, store_url)
    later = with_value(dataset, "measurements", ("m1",), "cit_concentration", None)

    assert counts(store.ingest(later, store_url)) == {**NOTHING, "measurements": (0, 1)}
    assert pd.isna(
        store.load(store_url, ["c10"]).measurements.set_index("measurement_id").loc["m1", "cit_concentration"]
    )


def test_a_partial_export_may_reference_stored_citizens_and_keeps_the_rest(store_url, dataset):
    store.ingest(dataset, store_url)
    only_new_round = with_rows(
        empty_dataset(),
        "measurements",
        [{"measurement_id": "m9", "citizen_id": "C2", "caseworker_id": "cw-1", "measured_on": "2013-09-01"}],
    )

    summary = store.ingest(only_new_round, store_url)

    assert counts(summary) == {**NOTHING, "measurements": (1, 0)}
    stored = store.load(store_url)
    assert len(stored.citizens) == 3
    assert set(stored.measurements["measurement_id"]) == {"m1", "m2", "m3", "m4", "m9"}


def test_a_reference_to_an_unknown_citizen_stores_nothing(store_url, dataset):
    store.ingest(dataset, store_url)
    before, log = store.load(store_url), store.ingests(store_url)
    bad = with_value(dataset, "citizens", ("c2",), "children", 3)  # a valid update that must not land
    bad = with_rows(
        bad,
        "measurements",
        [{"measurement_id": "m7", "citizen_id": "nobody", "caseworker_id": "cw-1", "measured_on": "2014-04-10"}],
    )

    with pytest.raises(store.StoreError, match=r"measurements\.citizen_id: 1 id\(s\)") as refused:
        store.ingest(bad, store_url)
    assert "nobody" not in str(refused.value)  # citizens' ids stay out of messages

    assert_same(store.load(store_url), before)
    assert store.ingests(store_url) == log


def test_a_later_enrolment_that_stored_rounds_would_precede_stores_nothing(store_url, dataset):
    """The export alone keeps the contract (one citizen row); merged with the store it would not: c10's
    stored rounds, episodes and follow-up would all come before the new enrolment date."""
    store.ingest(dataset, store_url)
    before, log = store.load(store_url), store.ingests(store_url)
    c10 = dataset.citizens[dataset.citizens["citizen_id"] == "c10"].assign(enrolled_on=pd.Timestamp("2016-06-01"))
    only_c10 = replace(empty_dataset(), citizens=canonical("citizens", c10.reset_index(drop=True)))

    with pytest.raises(store.StoreError, match=r"merged with the store.*enrolled_on") as refused:
        store.ingest(only_c10, store_url)
    assert "c10" not in str(refused.value) and "2016" not in str(refused.value)  # no ids, no dates

    assert_same(store.load(store_url), before)
    assert store.ingests(store_url) == log


def test_a_stored_round_cannot_move_to_another_citizen(store_url, dataset):
    store.ingest(dataset, store_url)
    before = store.load(store_url)
    moved = with_value(dataset, "measurements", ("m3",), "citizen_id", "c10")  # m3 is C2's round

    with pytest.raises(store.StoreError, match=r"1 stored round\(s\) would move to another citizen") as refused:
        store.ingest(moved, store_url)
    assert "C2" not in str(refused.value) and "c10" not in str(refused.value)

    assert_same(store.load(store_url), before)


def test_a_round_changed_in_place_is_still_an_update(store_url, dataset):
    store.ingest(dataset, store_url)

    summary = store.ingest(
        with_value(dataset, "measurements", ("m3",), "measured_on", pd.Timestamp("2013-05-21")), store_url
    )

    assert counts(summary) == {**NOTHING, "measurements": (0, 1)}


def test_a_reference_to_an_unknown_caseworker_in_a_first_ingest_stores_nothing(store_url, dataset):
    bad = with_value(dataset, "measurements", ("m4",), "caseworker_id", "cw-9")

    with pytest.raises(store.StoreError, match=r"measurements\.caseworker_id: 1 id\(s\)") as refused:
        store.ingest(bad, store_url)
    assert "cw-9" not in str(refused.value)  # caseworkers' ids stay out of messages too

    assert_same(store.load(store_url), empty_dataset())


@pytest.mark.parametrize("stored_first", [False, True], ids=["into-empty", "into-filled"])
def test_a_repeated_key_stores_nothing(store_url, dataset, stored_first):
    if stored_first:
        store.ingest(dataset, store_url)
    before = store.load(store_url)
    row = dataset.measurements.iloc[[0]].assign(measured_on=pd.Timestamp("2015-01-01"))
    bad = replace(dataset, measurements=pd.concat([dataset.measurements, row], ignore_index=True))

    with pytest.raises(store.StoreError):
        store.ingest(bad, store_url)

    assert_same(store.load(store_url), before)


@pytest.mark.parametrize("stored_first", [False, True], ids=["into-empty", "into-filled"])
def test_a_failure_midway_leaves_the_store_as_it_was(store_url, dataset, stored_first, monkeypatch):
    if stored_first:
        store.ingest(dataset, store_url)
    before, log = store.load(store_url), store.ingests(store_url)
    later = with_value(dataset, "citizens", ("c2",), "children", 3)
    later = with_rows(
        later,
        "measurements",
        [{"measurement_id": "m5", "citizen_id": "c2", "caseworker_id": "cw-2", "measured_on": "2014-04-10"}],
    )
    insert = store._insert

    def insert_then_fail(conn, name, frame):
        insert(conn, name, frame)
        if name == "interventions":  # after citizens and measurements were written
            raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_insert", insert_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        store.ingest(later, store_url)
    monkeypatch.undo()

    assert_same(store.load(store_url), before)
    assert store.ingests(store_url) == log


def test_many_batches_give_the_same_store(store_url, dataset, monkeypatch):
    monkeypatch.setattr(store, "CHUNK_ROWS", 2)
    monkeypatch.setattr(store, "IN_LIST_SIZE", 2)
    store.ingest(dataset, store_url)
    later = with_value(dataset, "interventions", ("c2", "mentor", pd.Timestamp("2014-02-01")), "ended_on", "2014-05-01")

    assert counts(store.ingest(later, store_url)) == {**NOTHING, "interventions": (0, 1)}
    assert_same(store.load(store_url), in_key_order(later))
    one = store.load(store_url, ["c2", "c10", "C2", "nobody"])
    assert_same(one, in_key_order(later))


def test_load_of_one_citizen_gives_only_their_rows(store_url, dataset):
    store.ingest(dataset, store_url)

    one = store.load(store_url, ["c10"])

    expected = in_key_order(dataset)
    for name in ("citizens", "measurements", "interventions", "outcomes"):
        frame = expected.table(name)
        pd.testing.assert_frame_equal(one.table(name), frame[frame["citizen_id"] == "c10"].reset_index(drop=True))
    assert one.caseworkers["caseworker_id"].tolist() == ["cw-1"]
    assert all(len(frame) == 0 for frame in store.load(store_url, ["nobody"]).tables().values())
    with pytest.raises(TypeError):
        store.load(store_url, "c10")  # one id is still a list of ids


def test_citizen_ids_are_found_by_prefix_in_order(store_url, dataset):
    store.ingest(dataset, store_url)

    assert store.citizen_ids(store_url) == ["C2", "c10", "c2"]
    assert store.citizen_ids(store_url, "c") == ["c10", "c2"]
    assert store.citizen_ids(store_url, "c1") == ["c10"]
    assert store.citizen_ids(store_url, "", limit=1) == ["C2"]
    assert store.citizen_ids(store_url, "x") == []
    assert store.citizen_ids(store_url, "c%") == []  # a literal prefix, not a pattern


def test_every_ingest_is_logged_with_its_counts(store_url, dataset):
    store.ingest(dataset, store_url, source="export-2014.zip")
    store.ingest(dataset, store_url)

    log = store.ingests(store_url)

    assert [entry["source"] for entry in log] == ["export-2014.zip", None]
    assert log[0]["added"]["measurements"] == 4
    assert log[1]["added"] == dict.fromkeys(TABLES, 0)
    assert log[0]["ingested_at"] <= log[1]["ingested_at"]


def test_visible_looks_a_citizen_up_within_job_centres(store_url, dataset):
    store.ingest(dataset, store_url)
    assert store.visible(store_url, "c10", ["Aarhus"]) and store.visible(store_url, "c10", None)
    assert not store.visible(store_url, "C2", ["Aarhus"])  # stored, in Odense
    assert not store.visible(store_url, "nobody", ["Aarhus"]) and not store.visible(store_url, "nobody", None)


def test_a_database_error_shows_no_parameters(store_url, dataset):
    """A statement's parameters are citizens' ids and answers: an error (here PostgreSQL's refusal of a
    NUL; SQLite takes it, so the error is forced) names the statement, never its values."""
    from sqlalchemy import select, text
    from sqlalchemy.exc import SQLAlchemyError

    store.ingest(dataset, store_url)
    secret = "QX-secret-4417"
    citizens = store.SCHEMA.tables["citizens"]
    with pytest.raises(SQLAlchemyError) as failed, store.engine(store_url).connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(citizens).where(citizens.c.citizen_id == f"{secret}\x00"))
        else:
            conn.execute(select(citizens).where(citizens.c.citizen_id == secret).where(text("no_such_function(1) = 1")))
    assert secret not in str(failed.value) and "hidden" in str(failed.value)


def test_an_interrupted_bulk_write_ends_in_the_interrupt(store_url, dataset):
    """Ctrl-C in a DBAPI call makes SQLAlchemy invalidate (close) the connection; resetting SQLite's page
    cache on it afterwards raised "Cannot operate on a closed database", which replaced the interrupt
    (an exit 3 crash). The interrupt comes through and the store is as before."""
    store.ingest(dataset, store_url)
    before = store.load(store_url)
    with pytest.raises(KeyboardInterrupt), store._write_transaction(store_url, bulk=True) as conn:
        conn.invalidate()
        raise KeyboardInterrupt
    for table in TABLES:
        pd.testing.assert_frame_equal(store.load(store_url).table(table), before.table(table))
