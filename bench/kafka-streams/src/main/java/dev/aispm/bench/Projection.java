package dev.aispm.bench;

import com.sun.management.OperatingSystemMXBean;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.InvalidStateStoreException;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;

/**
 * The projector bench's comparison projection, written with Kafka Streams:
 *
 * <blockquote>count open findings and last-seen per tenant and agent from the decision topic,
 * into a RocksDB-backed table</blockquote>
 *
 * <p>The DSL as Kafka Streams' documentation shows it: a {@link StreamsBuilder}; the decision
 * topic as a {@code KStream} with a custom {@link DecisionSerde}; {@link FirstSighting} (a
 * {@code processValues} step with a persistent key-value store) lets each event id through
 * once; {@code map} to the (tenant, agent) key and the little the aggregate needs
 * ({@link Sighting}); {@code groupByKey} (a repartition topic) and {@code aggregate} into a
 * {@link Materialized} RocksDB-backed {@code KTable}, {@value #ROWS_STORE}. Processing
 * guarantee exactly_once_v2; every other setting at its default.
 *
 * <p>The app stops by itself once it has read {@code --records} input records and folded every
 * non-duplicate one into the table (or when nothing happened for {@code --idle-timeout}
 * seconds: exit code 3), closes cleanly (the last transaction committed), and prints one JSON
 * line. With {@code --dump FILE} it first reads the table back through interactive queries
 * and writes it as JSON ({"tenant/agent": {"open_findings", "decisions", "last_seen"}}), for
 * {@code bench/quix/reference.py --compare}; that time is left out of "seconds".
 */
public final class Projection {
  public static final String ROWS_STORE = "agent-rows";

  private Projection() {}

  /** The topology, counting what it does into {@code counters}. */
  static Topology topology(String topic, DecisionSerde decisions, Counters counters) {
    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(topic, Consumed.with(Serdes.String(), decisions))
        .processValues(new FirstSighting(counters), Named.as("first-sighting"))
        .map(
            (tenant, d) -> KeyValue.pair(tenant + "/" + d.get("agent_id"), Sighting.of(d)),
            Named.as("by-agent-key"))
        .groupByKey(Grouped.with("by-agent", Serdes.String(), Sighting.SERDE))
        .aggregate(
            () -> {
              counters.newKey();
              return AgentRow.EMPTY;
            },
            (key, sighting, row) -> {
              counters.aggregated();
              return row.add(sighting);
            },
            Named.as("agent-rows"),
            Materialized.<String, AgentRow, KeyValueStore<Bytes, byte[]>>as(ROWS_STORE)
                .withKeySerde(Serdes.String())
                .withValueSerde(AgentRow.SERDE));
    return builder.build();
  }

  private static final class Args {
    String brokers = "127.0.0.1:9092";
    String topic;
    long records = -1;
    double idleTimeout = 30.0;
    Path stateDir;
    String applicationId;
    Path dump;
    Path schemas;
  }

  private static Args parse(String[] argv) {
    Args a = new Args();
    for (int i = 0; i < argv.length; i++) {
      String flag = argv[i];
      if (flag.equals("-h") || flag.equals("--help")) {
        System.out.println(
            "usage: java -jar aispm-kstreams-bench.jar --topic T --records N [--brokers B]\n"
                + "  [--idle-timeout S] [--state-dir D] [--application-id ID] [--dump FILE]\n"
                + "  [--schemas DIR]");
        System.exit(0);
      }
      if (i + 1 >= argv.length) {
        throw new IllegalArgumentException(flag + " needs a value");
      }
      String v = argv[++i];
      switch (flag) {
        case "--brokers" -> a.brokers = v;
        case "--topic" -> a.topic = v;
        case "--records" -> a.records = Long.parseLong(v);
        case "--idle-timeout" -> a.idleTimeout = Double.parseDouble(v);
        case "--state-dir" -> a.stateDir = Path.of(v);
        case "--application-id" -> a.applicationId = v;
        case "--dump" -> a.dump = Path.of(v);
        case "--schemas" -> a.schemas = Path.of(v);
        default -> throw new IllegalArgumentException("unknown argument " + flag);
      }
    }
    if (a.topic == null || a.records < 0) {
      throw new IllegalArgumentException("--topic and --records are required");
    }
    return a;
  }

  /** The repository's schemas/avro: the first one up from this jar (or classes directory). */
  private static Path findSchemas() throws URISyntaxException {
    Path p =
        Path.of(Projection.class.getProtectionDomain().getCodeSource().getLocation().toURI());
    for (; p != null; p = p.getParent()) {
      Path s = p.resolve("schemas").resolve("avro");
      if (Files.exists(s.resolve("decision_event.avsc"))) {
        return s;
      }
    }
    throw new IllegalStateException("no schemas/avro above the jar: pass --schemas");
  }

  /** CPU seconds (user + sys) of this JVM, every thread. */
  private static double cpuSeconds() {
    var os = (OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
    return os.getProcessCpuTime() / 1e9;
  }

  public static void main(String[] argv) throws Exception {
    long wall0 = System.nanoTime();
    Args args = parse(argv);
    Path schemas = args.schemas != null ? args.schemas : findSchemas();
    boolean tempState = args.stateDir == null;
    Path stateDir = tempState ? Files.createTempDirectory("kstreams-state-") : args.stateDir;
    String appId =
        args.applicationId != null
            ? args.applicationId
            : "aispm-kstreams-bench-" + UUID.randomUUID().toString().replace("-", "").substring(0, 12);

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.brokers);
    props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);

    Counters counters = new Counters(args.records);
    Topology topology = topology(args.topic, new DecisionSerde(schemas), counters);
    KafkaStreams streams = new KafkaStreams(topology, props);
    AtomicReference<Throwable> failure = new AtomicReference<>();
    streams.setUncaughtExceptionHandler(
        e -> {
          failure.compareAndSet(null, e);
          return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

    double cpu1 = cpuSeconds();
    long wall1 = System.nanoTime();
    streams.start();
    long idleNanos = (long) (args.idleTimeout * 1e9);
    int exit = 0;
    while (!counters.awaitDone(100)) {
      KafkaStreams.State state = streams.state();
      if (failure.get() != null || state == KafkaStreams.State.ERROR
          || state == KafkaStreams.State.PENDING_ERROR
          || state == KafkaStreams.State.NOT_RUNNING) {
        exit = 1;
        break;
      }
      if (System.nanoTime() - counters.lastProgressNanos() > idleNanos) {
        exit = 3;
        break;
      }
    }
    long dumpNanos = 0;
    Integer dumped = null;
    if (args.dump != null && exit == 0) {
      long d0 = System.nanoTime();
      dumped = dump(streams, args.dump);
      dumpNanos = System.nanoTime() - d0;
    }
    streams.close();
    long wall2 = System.nanoTime();
    double cpu2 = cpuSeconds();
    if (tempState) {
      deleteTree(stateDir);
    }

    long records = counters.records();
    long first = counters.firstRecordNanos();
    StringBuilder out = new StringBuilder("{");
    field(out, "records", records);
    field(out, "applied", records - counters.duplicates());
    field(out, "duplicates", counters.duplicates());
    field(out, "aggregated", counters.aggregatedCount());
    // From start() (group join and assignment included) to the end of close() (the last
    // commit), without the dump.
    field(out, "seconds", (wall2 - wall1 - dumpNanos) / 1e9);
    field(out, "seconds_from_first_record", first == 0 ? null : (wall2 - first - dumpNanos) / 1e9);
    // The whole JVM: its start, class loading and JIT included.
    field(out, "cpu_seconds", cpu2);
    field(out, "cpu_seconds_run", cpu2 - cpu1);
    field(out, "keys", counters.keys());
    field(out, "startup_seconds", (wall1 - wall0) / 1e9);
    field(out, "application_id", appId);
    field(out, "kafka_streams", AppInfoParser.getVersion());
    if (dumped != null) {
      field(out, "dumped_keys", dumped);
    }
    Throwable f = failure.get();
    if (f != null) {
      field(out, "error", f.toString());
    }
    out.setLength(out.length() - 2);
    System.out.println(out.append('}'));
    System.out.flush();
    if (f != null) {
      f.printStackTrace();
    }
    System.exit(exit != 0 ? exit : records >= args.records ? 0 : 3);
  }

  /** Every row of the table, through interactive queries, as JSON into `out`; the row count. */
  private static int dump(KafkaStreams streams, Path out) throws IOException, InterruptedException {
    ReadOnlyKeyValueStore<String, AgentRow> store = null;
    for (int attempt = 0; store == null; attempt++) {
      try {
        store =
            streams.store(
                StoreQueryParameters.fromNameAndType(
                    ROWS_STORE, QueryableStoreTypes.<String, AgentRow>keyValueStore()));
      } catch (InvalidStateStoreException e) {
        if (attempt >= 300) {
          throw e;
        }
        Thread.sleep(100);
      }
    }
    Map<String, AgentRow> rows = new TreeMap<>();
    try (KeyValueIterator<String, AgentRow> it = store.all()) {
      it.forEachRemaining(kv -> rows.put(kv.key, kv.value));
    }
    List<String> lines = new ArrayList<>(rows.size());
    rows.forEach(
        (k, r) ->
            lines.add(
                json(k)
                    + ": {\"decisions\": " + r.decisions()
                    + ", \"last_seen\": " + r.lastSeen()
                    + ", \"open_findings\": " + r.openFindings() + "}"));
    Files.writeString(out, "{" + String.join(", ", lines) + "}");
    return rows.size();
  }

  private static void field(StringBuilder out, String name, Object value) {
    out.append(json(name)).append(": ");
    if (value == null) {
      out.append("null");
    } else if (value instanceof String s) {
      out.append(json(s));
    } else {
      out.append(value);
    }
    out.append(", ");
  }

  private static String json(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        default -> {
          if (c < 0x20) {
            b.append(String.format("\\u%04x", (int) c));
          } else {
            b.append(c);
          }
        }
      }
    }
    return b.append('"').toString();
  }

  private static void deleteTree(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return;
    }
    try (Stream<Path> paths = Files.walk(dir)) {
      for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
        Files.deleteIfExists(p);
      }
    }
  }
}
