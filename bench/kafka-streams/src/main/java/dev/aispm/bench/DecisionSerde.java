package dev.aispm.bench;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serializer;

/**
 * The decision event in the aispm wire format, Avro single-object encoding: {@code C3 01}, the
 * writer schema's CRC-64-AVRO fingerprint (8 bytes, little-endian), the Avro datum
 * ({@code schemas/src/codec.rs} adds nothing else).
 *
 * <p>Avro's own {@link BinaryMessageDecoder} is exactly that format: it checks the header, looks
 * the fingerprint up among the schemas it knows (the current {@code decision_event.avsc} and
 * the earlier ones in {@code schemas/avro/v1/}), and resolves an older writer schema to the
 * current one, as the Rust codec does. A record with another header, an unknown fingerprint, a
 * datum that does not decode, or bytes after the datum is a {@link SerializationException}.
 * Values are {@link GenericRecord}s of the current schema (no generated classes).
 */
public final class DecisionSerde implements Serde<GenericRecord> {
  private final Schema current;
  private final BinaryMessageDecoder<GenericRecord> decoder;
  private final BinaryMessageEncoder<GenericRecord> encoder;

  /** Reads {@code dir/decision_event.avsc} and {@code dir/v1/decision_event*.avsc}. */
  public DecisionSerde(Path dir) {
    current = parse(dir.resolve("decision_event.avsc"));
    decoder = new BinaryMessageDecoder<>(GenericData.get(), current);
    for (Path older : olderSchemas(dir.resolve("v1"))) {
      decoder.addSchema(parse(older));
    }
    encoder = new BinaryMessageEncoder<>(GenericData.get(), current);
  }

  public Schema schema() {
    return current;
  }

  private static Schema parse(Path p) {
    try {
      // One parser per file: every version names the same types.
      return new Schema.Parser().parse(p.toFile());
    } catch (IOException e) {
      throw new UncheckedIOException("reading " + p, e);
    }
  }

  private static List<Path> olderSchemas(Path dir) {
    if (!Files.isDirectory(dir)) {
      return List.of();
    }
    try (Stream<Path> files = Files.list(dir)) {
      return files
          .filter(p -> p.getFileName().toString().matches("decision_event.*\\.avsc"))
          .sorted()
          .toList();
    } catch (IOException e) {
      throw new UncheckedIOException("listing " + dir, e);
    }
  }

  @Override
  public Serializer<GenericRecord> serializer() {
    return (topic, record) -> {
      if (record == null) {
        return null;
      }
      try {
        return encoder.encode(record).array();
      } catch (IOException e) {
        throw new SerializationException("encoding a decision event", e);
      }
    };
  }

  @Override
  public Deserializer<GenericRecord> deserializer() {
    return (topic, bytes) -> {
      if (bytes == null) {
        return null;
      }
      ByteArrayInputStream in = new ByteArrayInputStream(bytes);
      GenericRecord record;
      try {
        // Reads the datum straight from the stream (Avro's direct binary decoder), so what is
        // left in `in` afterwards is what follows the datum.
        record = decoder.decode(in, null);
      } catch (IOException | RuntimeException e) {
        throw new SerializationException("not a decision event in Avro single-object encoding", e);
      }
      if (in.available() != 0) {
        throw new SerializationException(in.available() + " trailing bytes after the datum");
      }
      return record;
    };
  }
}
