package dev.aispm.bench;

import java.nio.ByteBuffer;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;

/** One row of the table: per (tenant, agent), open findings, decisions and last seen (ms). */
public record AgentRow(long openFindings, long decisions, long lastSeen) {
  /** Before the first decision: {@link #add} makes last-seen that decision's time. */
  public static final AgentRow EMPTY = new AgentRow(0, 0, Long.MIN_VALUE);

  public AgentRow add(Sighting s) {
    return new AgentRow(
        openFindings + (s.opensFinding() ? 1 : 0),
        decisions + 1,
        Math.max(lastSeen, s.occurredAt()));
  }

  /** 24 bytes: the three longs, big-endian. */
  public static final Serde<AgentRow> SERDE =
      Serdes.serdeFrom(
          (topic, r) ->
              r == null
                  ? null
                  : ByteBuffer.allocate(24)
                      .putLong(r.openFindings())
                      .putLong(r.decisions())
                      .putLong(r.lastSeen())
                      .array(),
          (topic, b) -> {
            if (b == null) {
              return null;
            }
            if (b.length != 24) {
              throw new SerializationException("an agent row is 24 bytes, not " + b.length);
            }
            ByteBuffer buf = ByteBuffer.wrap(b);
            return new AgentRow(buf.getLong(), buf.getLong(), buf.getLong());
          });
}
