"""Exact duplicates: one GroupByKey per exact key (URL, caption, image bytes), the best node kept."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from filters.dedup import buckets
from filters.dedup.keys import EXACT_KEYS, DupKey
from pipelines.progress import group_size


def _key_or_pass(key: DupKey, kind: str, keep: frozenset[str]):
    """A DupKey -> (its exact key, its fields as a plain tuple: a runner's coder writes a tuple's
    fields, a NamedTuple as a pickle, 50 bytes more a row and step), or `unkeyed` without one;
    either way with only the fields later steps read (`keep`)."""
    value = EXACT_KEYS[kind][1](key)
    key = buckets.slim(key, keep)
    yield beam.pvalue.TaggedOutput("unkeyed", key) if value is None else (value, tuple(key))


class _Keys:
    """A grouped re-iterable of DupKey tuples seen as DupKeys, each pass anew (never a list)."""

    def __init__(self, group) -> None:
        self.group = group

    def __iter__(self):
        return map(DupKey._make, self.group)


def _split_exact(item, reason: str, namespace: str):
    """(exact key, DupKeys) -> the minimum node survives, every other one is a `reason` duplicate
    (two passes over the group, never a list of it)."""
    group = _Keys(item[1])
    rep, size = buckets.exact_group(group)
    group_size(namespace, reason, size)  # e.g. group_size_dup_url
    yield rep
    if size == 1:
        return
    groups_with_dups = 0
    for decision in buckets.exact_duplicates(group, rep, reason):
        groups_with_dups = 1
        yield beam.pvalue.TaggedOutput("dup", decision)
    Metrics.counter(namespace, f"{reason}_groups").inc(groups_with_dups)


class ExactDedup(beam.PTransform):
    """DupKeys -> (survivors, decisions) on one exact key ("url", "caption", "image" or "uid");
    the survivors carry only the fields in `keep` (what later steps read)."""

    def __init__(self, kind: str, namespace: str, keep: frozenset[str]) -> None:
        super().__init__()
        self.kind = kind
        self.namespace = namespace
        self.keep = keep

    def expand(self, keys):
        reason = EXACT_KEYS[self.kind][0]
        keyed = keys | "Key" >> beam.FlatMap(_key_or_pass, self.kind, self.keep).with_outputs("unkeyed", main="keyed")
        split = (
            keyed.keyed
            | "Group" >> beam.GroupByKey()
            | "Split" >> beam.FlatMap(_split_exact, reason, self.namespace).with_outputs("dup", main="kept")
        )
        survivors = (split.kept, keyed.unkeyed) | "Survivors" >> beam.Flatten()
        return survivors, split.dup
