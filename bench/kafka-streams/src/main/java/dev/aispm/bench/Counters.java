package dev.aispm.bench;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * What the topology has done so far, for the run's report and for stopping: the app is done
 * when it has read {@code target} input records and every one that was not a duplicate has
 * reached the aggregate (through the repartition topic, so committed upstream).
 */
public final class Counters {
  private final long target;
  private final AtomicLong records = new AtomicLong();
  private final AtomicLong duplicates = new AtomicLong();
  private final AtomicLong aggregated = new AtomicLong();
  private final AtomicLong keys = new AtomicLong();
  private final CountDownLatch done = new CountDownLatch(1);
  private volatile long firstRecordNanos;
  private volatile long lastProgressNanos = System.nanoTime();

  public Counters(long target) {
    this.target = target;
  }

  /** One input record: a duplicate (dropped) or the first of its event id. */
  void input(boolean duplicate) {
    long now = System.nanoTime();
    if (firstRecordNanos == 0) {
      firstRecordNanos = now;
    }
    lastProgressNanos = now;
    if (duplicate) {
      duplicates.incrementAndGet();
    }
    records.incrementAndGet();
    check();
  }

  /** A (tenant, agent) row created. */
  void newKey() {
    keys.incrementAndGet();
  }

  /** One decision folded into its row. */
  void aggregated() {
    lastProgressNanos = System.nanoTime();
    aggregated.incrementAndGet();
    check();
  }

  private void check() {
    long r = records.get();
    if (r >= target && aggregated.get() >= r - duplicates.get()) {
      done.countDown();
    }
  }

  /** Waits up to `millis` for the end; true when it came. */
  boolean awaitDone(long millis) throws InterruptedException {
    return done.await(millis, TimeUnit.MILLISECONDS);
  }

  long records() {
    return records.get();
  }

  long duplicates() {
    return duplicates.get();
  }

  long aggregatedCount() {
    return aggregated.get();
  }

  long keys() {
    return keys.get();
  }

  long firstRecordNanos() {
    return firstRecordNanos;
  }

  long lastProgressNanos() {
    return lastProgressNanos;
  }
}
