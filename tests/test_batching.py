"""Tests for :mod:`dataserv.storage.batching`: one write in flight, the rest wait and
share (group commit), or are written a moment later with nobody waiting (write-behind)."""

import gc

from twisted.internet import defer, task
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from dataserv.storage.batching import RETRY_SECONDS, GroupCommit, WriteBehind


class WriteFailed(Exception):
    """What the fake flush fails with."""


class RecordingFlush:
    """A flush function that records each batch and lets the test finish it."""

    def __init__(self):
        self.batches = []
        self.pending = []

    def __call__(self, items):
        self.batches.append(list(items))
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def finish(self, result=None):
        """Fire the oldest unfinished flush with result (a value or an exception)."""
        d = self.pending.pop(0)
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)


class GroupCommitTests(SynchronousTestCase):
    """GroupCommit with a flush whose Deferreds the test fires by hand."""

    def setUp(self):
        self.flush = RecordingFlush()
        self.group = GroupCommit(self.flush)

    def submit_all(self, *items):
        return [self.group.submit(item) for item in items]

    def test_first_item_flushes_at_once(self):
        """After an idle spell the first item is written without waiting."""
        self.group.submit("a")
        self.assertEqual(self.flush.batches, [["a"]])

    def test_items_arriving_during_a_flush_share_the_next(self):
        """Items submitted while a batch is in flight wait, then go in one batch."""
        self.submit_all("a", "b", "c")
        self.assertEqual(self.flush.batches, [["a"]])
        self.flush.finish()
        self.assertEqual(self.flush.batches, [["a"], ["b", "c"]])
        self.assertEqual((self.group.batches, self.group.items), (2, 3))

    def test_idle_again_after_the_queue_drains(self):
        """Once every batch is done, the next item starts a batch of its own at once."""
        self.group.submit("a")
        self.flush.finish()
        self.group.submit("b")
        self.assertEqual(self.flush.batches, [["a"], ["b"]])

    def test_callers_fire_only_after_their_flush(self):
        """A caller hears nothing until the batch holding its item has been written."""
        first, second, third = self.submit_all("a", "b", "c")
        self.assertNoResult(first)
        self.flush.finish("one")
        self.assertEqual(self.successResultOf(first), "one")
        self.assertNoResult(second)
        self.assertNoResult(third)
        self.flush.finish("two")
        self.assertEqual([self.successResultOf(d) for d in (second, third)], ["two", "two"])

    def test_failed_flush_fails_every_caller_of_its_batch(self):
        """A failing write errbacks each of its callers; the next batch still runs."""
        first, second, third, fourth = self.submit_all("a", "b", "c", "d")
        self.flush.finish()
        self.flush.finish(WriteFailed("disk on fire"))
        for d in (second, third, fourth):
            self.failureResultOf(d, WriteFailed)
        self.assertEqual(self.successResultOf(first), None)
        late = self.group.submit("e")
        self.assertEqual(self.flush.batches[-1], ["e"])
        self.flush.finish("fine")
        self.assertEqual(self.successResultOf(late), "fine")

    def test_failure_while_others_wait_moves_on(self):
        """Items queued behind a failing batch are flushed after it fails."""
        first, second = self.submit_all("a", "b")
        self.flush.finish(WriteFailed())
        self.failureResultOf(first, WriteFailed)
        self.assertEqual(self.flush.batches, [["a"], ["b"]])
        self.flush.finish("ok")
        self.assertEqual(self.successResultOf(second), "ok")

    def test_synchronous_flush_errors_are_delivered(self):
        """A flush that raises instead of returning a Deferred fails its callers too."""
        def explode(items):
            raise WriteFailed(items)

        group = GroupCommit(explode)
        self.failureResultOf(group.submit("a"), WriteFailed)
        self.failureResultOf(group.submit("b"), WriteFailed)
        self.assertEqual(group.batches, 2)

    def assert_cancel_keeps_item(self, outcome):
        """Cancel the second caller, finish both batches with outcome; nothing leaks."""
        first, second, third = self.submit_all("a", "b", "c")
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.flush.finish()
        self.assertEqual(self.flush.batches[1], ["b", "c"])
        self.flush.finish(outcome)
        del first, second
        gc.collect()  # an unconsumed failure would be logged (and fail the test) here
        return third

    def test_cancelled_caller_keeps_its_item(self):
        """Cancelling a caller does not take its item out of the batch."""
        third = self.assert_cancel_keeps_item("written")
        self.assertEqual(self.successResultOf(third), "written")

    def test_cancelled_caller_of_a_failed_batch(self):
        """A failed batch with a cancelled caller leaves no unhandled error behind."""
        third = self.assert_cancel_keeps_item(WriteFailed())
        self.failureResultOf(third, WriteFailed)

    def test_failed_batch_without_callers_is_logged_once(self):
        """A batch whose every caller has gone still says, in one short line, that it failed."""
        events = []
        self.group.log = Logger(observer=events.append)
        first, second = self.submit_all("a", "b")
        self.flush.finish()
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.flush.finish(WriteFailed("database is read-only\nDETAIL: more"))
        self.assertEqual([e["log_format"].format(**e) for e in events],
                         ["a batch of 1 writes failed after every caller had gone: "
                          "database is read-only"])
        self.assertEqual(events[0]["log_level"], LogLevel.warn)

    def test_failed_batch_with_a_caller_is_not_logged(self):
        """A failure that reaches a caller is theirs to report."""
        events = []
        self.group.log = Logger(observer=events.append)
        d = self.group.submit("a")
        self.flush.finish(WriteFailed("no"))
        self.failureResultOf(d, WriteFailed)
        self.assertEqual(events, [])

    def test_max_batch_splits(self):
        """No batch holds more than max_batch items; the rest follow in order."""
        group = GroupCommit(self.flush, max_batch=2)
        calls = [group.submit(item) for item in "abcde"]
        for _ in range(3):
            self.flush.finish("done")
        self.assertEqual(self.flush.batches, [["a"], ["b", "c"], ["d", "e"]])
        self.assertEqual([self.successResultOf(d) for d in calls], ["done"] * 5)

    def test_max_batch_leaves_remainder_for_later(self):
        """What does not fit in a batch waits for the one after."""
        group = GroupCommit(self.flush, max_batch=2)
        calls = [group.submit(item) for item in "abcd"]
        self.flush.finish()
        self.flush.finish()
        self.assertNoResult(calls[3])
        self.assertEqual(self.flush.batches[-1], ["d"])


class WriteBehindTests(SynchronousTestCase):
    """WriteBehind on a Clock, with a flush whose Deferreds the test fires by hand."""

    def setUp(self):
        self.clock = task.Clock()
        self.flush = RecordingFlush()
        self.events = []
        self.queue = WriteBehind(self.flush, self.clock, 0.05, keep=lambda item: item != "old",
                                 what="keys")
        self.queue.log = Logger(observer=self.events.append)

    def test_items_of_one_interval_go_in_one_write(self):
        """Nothing is written at once; everything that came within the interval goes
        in one call when it ends."""
        for item in "abc":
            self.queue.add(item)
            self.clock.advance(0.01)
        self.assertEqual(self.flush.batches, [])
        self.clock.advance(0.02)
        self.assertEqual(self.flush.batches, [["a", "b", "c"]])
        self.assertEqual(len(self.queue), 0)

    def test_one_write_in_flight(self):
        """Items that arrive during a write wait for it, then one interval more."""
        self.queue.add("a")
        self.clock.advance(0.05)
        self.queue.add("b")
        self.clock.advance(1)
        self.assertEqual(self.flush.batches, [["a"]])
        self.flush.finish()
        self.assertEqual(self.flush.batches, [["a"]])
        self.clock.advance(0.05)
        self.assertEqual(self.flush.batches, [["a"], ["b"]])

    def test_failed_write_keeps_what_is_worth_keeping_and_retries(self):
        """A failed write's items (but those keep refuses) go first in the next one,
        tried again after RETRY_SECONDS; the failure is logged once, the recovery too."""
        for item in ("old", "a"):
            self.queue.add(item)
        self.clock.advance(0.05)
        self.queue.add("b")
        self.flush.finish(WriteFailed("database not answering\ndetail"))
        self.clock.advance(0.05)
        self.assertEqual(len(self.flush.batches), 1)
        self.clock.advance(RETRY_SECONDS)
        self.assertEqual(self.flush.batches[1], ["a", "b"])
        self.flush.finish(WriteFailed("database not answering"))
        self.clock.advance(RETRY_SECONDS)
        self.flush.finish()
        self.assertEqual(self.flush.batches[2], ["a", "b"])
        self.assertEqual([e["log_format"].format(**e) for e in self.events],
                         ["1 keys wait for the next write: database not answering",
                          "keys are written again"])
        self.assertEqual(self.events[0]["log_level"], LogLevel.warn)
        self.clock.advance(RETRY_SECONDS)
        self.assertEqual(len(self.flush.batches), 3)

    def test_drain_writes_now_and_waits(self):
        """drain() writes at once and fires when that write is done."""
        self.queue.add("a")
        drained = self.queue.drain()
        self.assertEqual(self.flush.batches, [["a"]])
        self.assertNoResult(drained)
        self.flush.finish()
        self.successResultOf(drained)
        self.clock.advance(1)
        self.assertEqual(len(self.flush.batches), 1)

    def test_drain_of_a_failing_write_fires_and_keeps_the_items(self):
        self.queue.add("a")
        drained = self.queue.drain()
        self.flush.finish(WriteFailed("down"))
        self.successResultOf(drained)
        self.assertEqual(len(self.queue), 1)

    def test_drain_with_nothing_queued_fires_at_once(self):
        self.successResultOf(self.queue.drain())
        self.assertEqual(self.flush.batches, [])

    def test_synchronous_flush_error_is_kept(self):
        """A flush that raises instead of returning a failed Deferred loses nothing."""
        def broken(items):
            raise WriteFailed("no")
        queue = WriteBehind(broken, self.clock, 0.05)
        queue.log = Logger(observer=self.events.append)
        queue.add("a")
        self.clock.advance(0.05)
        self.assertEqual(len(queue), 1)
