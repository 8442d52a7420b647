package dev.aispm.bench;

import java.nio.ByteBuffer;
import java.util.Set;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;

/**
 * What the aggregate needs of one decision, and all that crosses the repartition topic: whether
 * it opens a finding and when it occurred.
 *
 * <p>"Open finding" is the projector's rule AISPM-APR-001, <i>high or critical action allowed
 * without approval</i>: risk {@code high} or {@code critical}, verdict {@code allow}, no
 * {@code approval_id}.
 */
public record Sighting(boolean opensFinding, long occurredAt) {
  private static final Set<String> HIGH = Set.of("high", "critical");

  public static Sighting of(GenericRecord d) {
    boolean opens =
        HIGH.contains(d.get("risk").toString())
            && "allow".equals(d.get("verdict").toString())
            && d.get("approval_id") == null;
    // timestamp-millis without a logical-type conversion: the long itself.
    return new Sighting(opens, (Long) d.get("occurred_at"));
  }

  /** Nine bytes: a flag and the big-endian milliseconds. */
  public static final Serde<Sighting> SERDE =
      Serdes.serdeFrom(
          (topic, s) ->
              s == null
                  ? null
                  : ByteBuffer.allocate(9)
                      .put((byte) (s.opensFinding() ? 1 : 0))
                      .putLong(s.occurredAt())
                      .array(),
          (topic, b) -> {
            if (b == null) {
              return null;
            }
            if (b.length != 9) {
              throw new SerializationException("a sighting is 9 bytes, not " + b.length);
            }
            ByteBuffer buf = ByteBuffer.wrap(b);
            return new Sighting(buf.get() != 0, buf.getLong());
          });
}
