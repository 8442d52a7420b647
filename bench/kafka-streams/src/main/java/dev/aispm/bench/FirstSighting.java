package dev.aispm.bench;

import java.util.Set;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorSupplier;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;

/**
 * Forwards each event id once: the first record of a (tenant, event id) passes, a re-sent one
 * (the bench's generator re-sends about 1% of records) stops here. The ids seen live in a
 * persistent (RocksDB) key-value store, {@value #STORE}, connected to this processor through
 * {@link #stores()} and, like every store of the application, backed by a changelog topic.
 *
 * <p>The stream is keyed by tenant and stays so (a {@code processValues} step), so every record
 * of a tenant, a re-sent one included, reaches the same task and store.
 */
public final class FirstSighting
    implements FixedKeyProcessorSupplier<String, GenericRecord, GenericRecord> {
  public static final String STORE = "seen-event-ids";
  private static final byte[] SEEN = new byte[0];

  private final Counters counters;

  public FirstSighting(Counters counters) {
    this.counters = counters;
  }

  @Override
  public Set<StoreBuilder<?>> stores() {
    return Set.of(
        Stores.keyValueStoreBuilder(
            Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.ByteArray()));
  }

  @Override
  public FixedKeyProcessor<String, GenericRecord, GenericRecord> get() {
    return new FixedKeyProcessor<>() {
      private FixedKeyProcessorContext<String, GenericRecord> context;
      private KeyValueStore<String, byte[]> seen;

      @Override
      public void init(FixedKeyProcessorContext<String, GenericRecord> context) {
        this.context = context;
        this.seen = context.getStateStore(STORE);
      }

      @Override
      public void process(FixedKeyRecord<String, GenericRecord> record) {
        // Tenant ids are letters, digits, '.', '_' and '-': the '/' cannot be part of one.
        String id = record.key() + "/" + record.value().get("event_id");
        if (seen.get(id) != null) {
          counters.input(true);
          return;
        }
        seen.put(id, SEEN);
        counters.input(false);
        context.forward(record);
      }
    };
  }
}
