//! Kafka ACLs with SASL as compose/ deploys them, against Apache Kafka configured from
//! `compose/docker-compose.yml` (SASL/SCRAM-SHA-512 listeners, `StandardAuthorizer`, no access
//! without an ACL) with the principals and ACLs of `compose/kafka/setup.sh`, both as they are:
//! a producer that writes straight to Kafka writes only the topic its principal may write, and
//! every aispm service runs end to end with its own principal, given through
//! `AISPM_KAFKA_OPTIONS` as compose/ gives it, while a wrong password or another principal's
//! rights keep a service from becoming ready.

use aispm_runtime::kafka::KafkaConfig;
use aispm_schemas::InputKind;
use aispm_schemas::Topics;
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::broker::kafka_setup;
use aispm_tests::process::Service;
use aispm_tools::load::LoadGen;
use aispm_tools::records::Generated;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every password compose/ takes, none of them its `change-me-…` default: the broker and the
/// setup script must both read them from the variables.
fn passwords() -> BTreeMap<String, String> {
    aispm_tests::compose::kafka_secrets(|p| format!("t3st-{}-pw-0123456789", p.to_lowercase()))
}

fn password(vars: &BTreeMap<String, String>, principal: &str) -> String {
    vars[&format!("AISPM_KAFKA_{}_PASSWORD", principal.to_uppercase())].clone()
}

/// `AISPM_KAFKA_OPTIONS` for `user`, as compose/docker-compose.yml writes it.
fn kafka_options_env(broker: &Broker, user: &str, password: &str) -> Vec<(String, String)> {
    let options = broker
        .client_options(user, password)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![("AISPM_KAFKA_OPTIONS".to_owned(), options)]
}

/// An idempotent producer (the services' settings) signed in as `user`.
fn producer(broker: &Broker, user: &str, password: &str) -> FutureProducer {
    let mut kafka = KafkaConfig::local(&broker.bootstrap());
    kafka.options = broker.client_options(user, password);
    let mut config = kafka.producer_config();
    config.set("message.timeout.ms", "10000");
    config.create().unwrap()
}

async fn send(p: &FutureProducer, topic: &str, r: &Generated) -> Result<(), KafkaError> {
    p.send(
        FutureRecord::to(topic)
            .key(r.tenant.as_str())
            .payload(&r.bytes),
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
    .map_err(|(e, _)| e)
}

fn assert_topic_denied(result: Result<(), KafkaError>, who: &str, topic: &str) {
    match result {
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {}
        other => panic!("{who} writing {topic}: want TopicAuthorizationFailed, got {other:?}"),
    }
}

/// One generated event of `kind`.
fn event(generator: &mut LoadGen, kind: InputKind) -> Generated {
    loop {
        let r = generator.next_record();
        if r.kind == kind {
            return r;
        }
    }
}

/// Reads `topic` from the beginning, by assignment, as `options` say, until a record's key
/// starts with `key_prefix` or `timeout`; the error a read ended with, if any.
fn find_record(
    bootstrap: &str,
    options: &[(String, String)],
    topic: &str,
    partitions: i32,
    key_prefix: &str,
    timeout: Duration,
) -> Result<bool, KafkaError> {
    // Reading by assignment from explicit offsets: no group request is made (librdkafka still
    // wants a group id), so what is refused is the topic.
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("acl-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in options {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m))
                if m.key()
                    .is_some_and(|k| k.starts_with(key_prefix.as_bytes())) =>
            {
                return Ok(true);
            }
            // librdkafka also asks about the (unused) group, which the principal may not
            // describe: that says nothing of the topic, whose answer comes with the fetch.
            Some(Err(e))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {}
            Some(Err(e)) => return Err(e),
            _ => {}
        }
    }
    Ok(false)
}

/// `GET /readyz` of `s`: its status and body.
async fn readyz(s: &Service) -> (u16, String) {
    match reqwest::get(format!("{}/readyz", s.http)).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_kafka_acls_hold_every_principal_to_its_topics() {
    let started = Instant::now();
    let vars = passwords();
    let broker = Broker::start_secured(&vars).unwrap();
    let broker_took = started.elapsed();
    let out = kafka_setup(&broker, &vars).unwrap();
    let setup_took = started.elapsed() - broker_took;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kafka setup done"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let topics = Topics::default();
    let dir = tempfile::tempdir().unwrap();
    let state = |s: &str| dir.path().join(s).display().to_string();
    let addr = || format!("127.0.0.1:{}", free_port());
    let common = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--brokers", &broker.bootstrap(), "--partitions", "3"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };

    // The four services, each with its own principal, create their topics and become ready.
    let mut projector = Service::start_with_env(
        "aispm-projector",
        &addr(),
        &common(&["--state-dir", &state("projector"), "--batch-wait", "5ms"]),
        &kafka_options_env(&broker, "aispm-projector", &password(&vars, "projector")),
        dir.path(),
    )
    .unwrap();
    let mut gatekeeper = Service::start_with_env(
        "aispm-gatekeeper",
        &addr(),
        &common(&["--evaluation-interval", "1s"]),
        &kafka_options_env(&broker, "aispm-gatekeeper", &password(&vars, "gatekeeper")),
        dir.path(),
    )
    .unwrap();
    let mut reporter = Service::start_with_env(
        "aispm-reporter",
        &addr(),
        &common(&["--state-dir", &state("reporter")]),
        &kafka_options_env(&broker, "aispm-reporter", &password(&vars, "reporter")),
        dir.path(),
    )
    .unwrap();
    let mut ingest = Service::start_with_env(
        "aispm-ingest",
        &addr(),
        &common(&[]),
        &kafka_options_env(&broker, "aispm-ingest", &password(&vars, "ingest")),
        dir.path(),
    )
    .unwrap();
    // Ingest with a wrong password, and ingest signed in as the gateway, whose principal may
    // not create (or even see) the approvals and registry topics ingest needs.
    let wrong_password = Service::start_with_env(
        "aispm-ingest",
        &addr(),
        &common(&[]),
        &kafka_options_env(&broker, "aispm-ingest", "not-the-password"),
        dir.path(),
    )
    .unwrap();
    let wrong_principal = Service::start_with_env(
        "aispm-ingest",
        &addr(),
        &common(&[]),
        &kafka_options_env(&broker, "gateway", &password(&vars, "gateway")),
        dir.path(),
    )
    .unwrap();
    let services_started = Instant::now();
    for s in [&mut projector, &mut gatekeeper, &mut reporter, &mut ingest] {
        s.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let services_took = services_started.elapsed();

    // Producers that write straight to Kafka: each writes its own topic, and nothing else.
    let mut generator = LoadGen::keyed(16, 1, 8);
    let decision = event(&mut generator, InputKind::Decision);
    let approval = event(&mut generator, InputKind::Approval);
    let registration = event(&mut generator, InputKind::Registry);
    let gateway = producer(&broker, "gateway", &password(&vars, "gateway"));
    send(&gateway, &topics.decisions, &decision)
        .await
        .expect("the gateway writes decisions");
    for topic in [&topics.approvals, &topics.registry, &topics.views] {
        assert_topic_denied(send(&gateway, topic, &approval).await, "gateway", topic);
    }
    let approver = producer(&broker, "approver", &password(&vars, "approver"));
    send(&approver, &topics.approvals, &approval)
        .await
        .expect("the approval system writes approvals");
    assert_topic_denied(
        send(&approver, &topics.decisions, &decision).await,
        "approver",
        &topics.decisions,
    );
    let registrar = producer(&broker, "registrar", &password(&vars, "registrar"));
    send(&registrar, &topics.registry, &registration)
        .await
        .expect("the registry writes registry events");
    assert_topic_denied(
        send(&registrar, &topics.approvals, &approval).await,
        "registrar",
        &topics.approvals,
    );
    // Writing is all: the gateway cannot read back what it (or anyone) wrote.
    let read = find_record(
        &broker.bootstrap(),
        &broker.client_options("gateway", &password(&vars, "gateway")),
        &topics.decisions,
        3,
        "",
        Duration::from_secs(10),
    );
    match read {
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {}
        other => {
            panic!("the gateway reading decisions: want TopicAuthorizationFailed, got {other:?}")
        }
    }

    // End to end, each service with its own rights: the projector reads the gateway's decision
    // and writes a view change; the gatekeeper reads it and writes the tenant's readiness.
    let admin = broker.admin_options();
    let tenant_key = format!("{}/", decision.tenant);
    assert!(
        find_record(
            &broker.admin_bootstrap(),
            &admin,
            &topics.readiness,
            3,
            &tenant_key,
            Duration::from_secs(30),
        )
        .unwrap(),
        "no readiness for {} within 30 s\nprojector:\n{}\ngatekeeper:\n{}",
        decision.tenant,
        projector.log_tail(),
        gatekeeper.log_tail()
    );
    for s in [&projector, &gatekeeper, &reporter, &ingest] {
        let (status, body) = readyz(s).await;
        assert_eq!(status, 200, "{body}");
    }

    // Neither ingest that signs in wrongly or as the wrong principal got ready meanwhile.
    assert!(services_started.elapsed() > Duration::from_secs(5));
    let (status, body) = readyz(&wrong_password).await;
    assert_eq!(status, 503, "a wrong password: {body}");
    assert!(
        wrong_password.log().contains("Authentication failed"),
        "{}",
        wrong_password.log_tail()
    );
    let (status, body) = readyz(&wrong_principal).await;
    assert_eq!(status, 503, "the gateway's principal: {body}");
    eprintln!(
        "broker {broker_took:?}, compose/kafka/setup.sh {setup_took:?}, services ready \
         {services_took:?}, whole test {:?}",
        started.elapsed()
    );
}
