//! What `compose/` deploys, read the way Docker Compose and the `apache/kafka` image read it, so
//! the tests run Apache Kafka with the very settings of `compose/docker-compose.yml` and apply
//! `compose/kafka/setup.sh` to it unchanged.
//!
//! Only the subset of YAML that file uses for a service's `environment:` is understood (a block
//! mapping of `KEY: scalar`); anything else there is an error, not a guess.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What each `AISPM_KAFKA_<NAME>_PASSWORD` of `compose/` secures: the Kafka principals'
/// passwords and the broker's TLS key store.
pub const KAFKA_SECRETS: [&str; 9] = [
    "ADMIN",
    "INGEST",
    "PROJECTOR",
    "GATEKEEPER",
    "REPORTER",
    "GATEWAY",
    "APPROVER",
    "REGISTRAR",
    "TLS",
];

/// Every `AISPM_KAFKA_<NAME>_PASSWORD`, valued by `value(NAME)`.
pub fn kafka_secrets(value: impl Fn(&str) -> String) -> BTreeMap<String, String> {
    KAFKA_SECRETS
        .iter()
        .map(|n| (format!("AISPM_KAFKA_{n}_PASSWORD"), value(n)))
        .collect()
}

/// The repository's `compose/` directory.
pub fn compose_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("compose")
}

/// The `environment:` of `service` in `compose/docker-compose.yml`, in file order, with
/// `${VAR}`, `${VAR:-default}` and `${VAR-default}` taken from `vars` (else the default) and
/// `$$` as `$`, as Compose interpolates them.
pub fn service_environment(
    service: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let path = compose_dir().join("docker-compose.yml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let raw = environment_block(&text, service)
        .with_context(|| format!("{}: service {service}", path.display()))?;
    raw.into_iter()
        .map(|(k, v)| {
            let v = interpolate(&v, vars).with_context(|| format!("{service}: {k}"))?;
            Ok((k, v))
        })
        .collect()
}

/// The raw `KEY: value` pairs of `services.<service>.environment`.
fn environment_block(text: &str, service: &str) -> Result<Vec<(String, String)>> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let skip = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    let services = lines
        .iter()
        .position(|l| *l == "services:")
        .context("no top-level `services:`")?;
    let header = format!("{service}:");
    let start = lines[services + 1..]
        .iter()
        .position(|l| indent(l) == 2 && l.trim() == header)
        .map(|i| services + 1 + i)
        .with_context(|| format!("no service `{service}`"))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| !skip(l) && indent(l) <= 2)
        .map_or(lines.len(), |i| start + 1 + i);
    let env = lines[start + 1..end]
        .iter()
        .position(|l| indent(l) == 4 && l.trim() == "environment:")
        .map(|i| start + 1 + i)
        .context("no `environment:` mapping")?;
    let mut out = Vec::new();
    for line in &lines[env + 1..end] {
        if skip(line) {
            continue;
        }
        if indent(line) <= 4 {
            break;
        }
        let (key, value) = line
            .trim()
            .split_once(": ")
            .or_else(|| line.trim().strip_suffix(':').map(|k| (k, "")))
            .with_context(|| format!("not `KEY: value`: {line}"))?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("not an environment variable name: {key}");
        }
        out.push((key.to_owned(), scalar(value)?));
    }
    Ok(out)
}

/// A YAML flow scalar on one line: double-quoted, single-quoted or plain.
fn scalar(v: &str) -> Result<String> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .with_context(|| format!("unterminated string: {v}"))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('"' | '\\' | '/')) => out.push(c),
                    other => bail!("unsupported escape \\{other:?} in {v}"),
                }
            } else {
                out.push(c);
            }
        }
        return Ok(out);
    }
    if let Some(inner) = v.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .with_context(|| format!("unterminated string: {v}"))?;
        return Ok(inner.replace("''", "'"));
    }
    if v.starts_with(['[', '{', '|', '>', '&', '*', '!']) {
        bail!("not a plain scalar: {v}");
    }
    // YAML reads `: ` inside a plain scalar as a mapping, and Compose refuses the file.
    if v.split(" #").next().unwrap_or_default().contains(": ") {
        bail!("a plain scalar may not hold ': ' (quote it): {v}");
    }
    // A plain scalar ends where ` #` starts a comment.
    Ok(v.split(" #")
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned())
}

/// Compose's variable interpolation.
fn interpolate(v: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let close = r
                .find('}')
                .with_context(|| format!("unclosed ${{ in {v}"))?;
            let expr = &r[..close];
            rest = &r[close + 1..];
            // `${NAME:?message}` and `${NAME?message}`: required; Compose refuses to start
            // with the message when it is unset (or, with the colon, empty).
            let required = expr
                .split_once(":?")
                .map(|(n, m)| (n, m, true))
                .or_else(|| expr.split_once('?').map(|(n, m)| (n, m, false)));
            if let Some((name, message, colon)) = required {
                match vars.get(name).filter(|x| !(colon && x.is_empty())) {
                    Some(value) => out.push_str(value),
                    None => bail!("required variable {name} is missing a value: {message}"),
                }
                continue;
            }
            let (name, default, colon) = if let Some((n, d)) = expr.split_once(":-") {
                (n, Some(d), true)
            } else if let Some((n, d)) = expr.split_once('-') {
                (n, Some(d), false)
            } else {
                (expr, None, false)
            };
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("unsupported interpolation ${{{expr}}} in {v}");
            }
            // `:-` also replaces an empty value; `-` only an unset one.
            match (vars.get(name).filter(|x| !(colon && x.is_empty())), default) {
                (Some(value), _) => out.push_str(value),
                (None, Some(d)) => out.push_str(d),
                (None, None) => bail!("${{{name}}} has no value and no default"),
            }
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..len];
            rest = &rest[len..];
            out.push_str(
                vars.get(name)
                    .with_context(|| format!("${name} has no value"))?,
            );
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Variables the `apache/kafka` image passes to the JVM instead of writing them into
/// `server.properties` (its `KafkaDockerWrapper`'s exclusion list).
const NOT_PROPERTIES: &[&str] = &[
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
];

/// The broker properties the `apache/kafka` image writes from `KAFKA_*` variables: the prefix
/// dropped, lower case, `_` → `.`, `___` → `-`, `__` → `_`.
pub fn kafka_properties(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with("KAFKA_") && !NOT_PROPERTIES.contains(&k.as_str()))
        .map(|(k, v)| {
            let key = k
                .replace("KAFKA_", "")
                .to_lowercase()
                .replace('_', ".")
                .replace("...", "-")
                .replace("..", "_");
            (key, v.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn interpolates_as_compose_does() {
        let v = vars(&[("A", "x"), ("E", "")]);
        assert_eq!(interpolate("${A:-d}", &v).unwrap(), "x");
        assert_eq!(interpolate("${B:-d}", &v).unwrap(), "d");
        assert_eq!(interpolate("${E:-d}", &v).unwrap(), "d");
        assert_eq!(interpolate("${E-d}", &v).unwrap(), "");
        assert_eq!(interpolate("p=\"$A\";$$HOME", &v).unwrap(), "p=\"x\";$HOME");
        assert!(interpolate("${B}", &v).is_err());
        assert!(scalar("a: b").is_err(), "YAML would read a mapping");
        assert_eq!(scalar("\"a: b\"").unwrap(), "a: b");
        assert_eq!(interpolate("${A:?say}", &v).unwrap(), "x");
        let e = interpolate("${B:?set B - now}", &v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("set B - now"), "{e}");
        assert!(interpolate("${E:?set E}", &v).is_err());
        assert_eq!(interpolate("${E?set E}", &v).unwrap(), "");
    }

    #[test]
    fn names_properties_as_the_image_does() {
        let env = vec![
            (
                "KAFKA_LISTENER_NAME_CLIENT_SCRAM___SHA___512_SASL_JAAS_CONFIG".to_owned(),
                "j".to_owned(),
            ),
            ("KAFKA_OPTS".to_owned(), "-Dx".to_owned()),
            ("CLUSTER_ID".to_owned(), "c".to_owned()),
            ("KAFKA_SUPER_USERS".to_owned(), "User:admin".to_owned()),
        ];
        assert_eq!(
            kafka_properties(&env),
            [
                (
                    "listener.name.client.scram-sha-512.sasl.jaas.config".to_owned(),
                    "j".to_owned()
                ),
                ("super.users".to_owned(), "User:admin".to_owned())
            ]
        );
    }

    /// The compose broker refuses what no ACL allows, and its JAAS settings are well-formed.
    #[test]
    fn the_compose_broker_is_locked_down() {
        // No secret has a default: without them, Compose refuses to start.
        let e = format!(
            "{:#}",
            service_environment("kafka", &BTreeMap::new()).unwrap_err()
        );
        assert!(
            e.contains("required variable AISPM_KAFKA_") && e.contains("refuses to start"),
            "{e}"
        );
        let vars = kafka_secrets(|p| format!("pw-{p}-0123456789"));
        let env = service_environment("kafka", &vars).unwrap();
        let props: BTreeMap<String, String> = kafka_properties(&env).into_iter().collect();
        assert_eq!(
            props["authorizer.class.name"],
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        );
        assert_eq!(props["allow.everyone.if.no.acl.found"], "false");
        assert_eq!(props["super.users"], "User:admin");
        let map = &props["listener.security.protocol.map"];
        assert!(
            map.split(',').all(|l| l.contains(":SASL_")),
            "every listener authenticates: {map}"
        );
        for client in ["CLIENT", "EXTERNAL"] {
            assert!(
                map.split(',').any(|l| l == format!("{client}:SASL_SSL")),
                "{client} speaks TLS: {map}"
            );
        }
        assert_eq!(
            props["ssl.keystore.location"],
            "/etc/kafka/certs/broker.p12"
        );
        assert_eq!(props["ssl.keystore.password"], "pw-TLS-0123456789");
        assert!(
            props["listener.name.broker.plain.sasl.jaas.config"]
                .contains(r#"password="pw-ADMIN-0123456789""#)
        );
        let setup = service_environment("kafka-setup", &vars).unwrap();
        assert!(
            setup
                .iter()
                .any(|(k, v)| k == "AISPM_KAFKA_GATEWAY_PASSWORD" && v == "pw-GATEWAY-0123456789")
        );
    }

    /// `compose/preflight.sh`, run as the `preflight` service runs it: it refuses the example
    /// secrets and tokens, and passes real ones.
    #[test]
    fn preflight_refuses_example_secrets() {
        let script = compose_dir().join("preflight.sh");
        let example = compose_dir().join("tokens.example.toml");
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("tokens.toml");
        std::fs::write(
            &good,
            std::fs::read_to_string(&example)
                .unwrap()
                .replace("change-me-", "9f2c4e1a7b3d5f60-"),
        )
        .unwrap();
        let example_read = dir.path().join("example-read-token");
        std::fs::write(&example_read, "change-me-reporter-read\n").unwrap();
        let good_read = dir.path().join("read-token");
        std::fs::write(&good_read, "9f2c4e1a7b3d5f60-reporter-read\n").unwrap();
        let run = |tokens: &std::path::Path, kafka: &str, grafana: &str| {
            let read = if tokens == example {
                &example_read
            } else {
                &good_read
            };
            let mut c = std::process::Command::new("sh");
            c.arg(&script)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("AISPM_TOKENS_FILE", tokens)
                .env("AISPM_READ_TOKEN_FILE", read)
                .env("GRAFANA_ADMIN_PASSWORD", grafana);
            for (k, v) in kafka_secrets(|p| format!("{kafka}{p}")) {
                c.env(k, v);
            }
            let out = c.output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, err) = run(&example, "change-me-", "admin");
        assert!(!ok);
        assert!(
            err.contains("AISPM_KAFKA_ADMIN_PASSWORD is still its example value"),
            "{err}"
        );
        assert!(err.contains("GRAFANA_ADMIN_PASSWORD is a default"), "{err}");
        assert!(err.contains("token 1 is still an example value"), "{err}");
        assert!(
            err.contains("the reporter's read token is still an example value"),
            "{err}"
        );
        let (ok, err) = run(&good, "short", "0123456789abcdef");
        assert!(!ok);
        assert!(err.contains("shorter than 16"), "{err}");
        let (ok, err) = run(&good, "a1b2c3d4e5f60718-", "0123456789abcdef");
        assert!(ok, "{err}");
    }
}
