#!/bin/sh
# Refuses to start the deployment on an example or weak secret (docker-compose.yml runs it
# before anything else; it exits non-zero with one line per problem):
#   - a Kafka password (AISPM_KAFKA_<PRINCIPAL>_PASSWORD, and AISPM_KAFKA_TLS_PASSWORD of the
#     broker's key store) that is a `change-me-…` example or shorter than 16 characters;
#   - GRAFANA_ADMIN_PASSWORD that is `admin`, a `change-me-…` example or shorter than 12;
#   - a bearer token in the tokens file (AISPM_TOKENS_FILE) that is a `change-me-…` example
#     or shorter than 24 characters;
#   - the reporter's read token (AISPM_READ_TOKEN_FILE: the quarterly archive reads every
#     tenant's state as of the quarter's end with it) missing, an example or short.
# Tokens given as `sha256 = "…"` cannot be judged here and are taken as they are.
set -u

problems=0
refuse() {
  echo "preflight: $*" >&2
  problems=$((problems + 1))
}

for name in ADMIN INGEST PROJECTOR GATEKEEPER REPORTER GATEWAY APPROVER REGISTRAR TLS; do
  var="AISPM_KAFKA_${name}_PASSWORD"
  eval "value=\${$var:-}"
  case $value in
    '') refuse "$var is not set" ;;
    change-me*) refuse "$var is still its example value; set a secret (openssl rand -hex 24)" ;;
    *) [ ${#value} -ge 16 ] || refuse "$var is shorter than 16 characters" ;;
  esac
done

grafana=${GRAFANA_ADMIN_PASSWORD:-}
case $grafana in
  '') refuse "GRAFANA_ADMIN_PASSWORD is not set" ;;
  admin | change-me*) refuse "GRAFANA_ADMIN_PASSWORD is a default; set a secret" ;;
  *) [ ${#grafana} -ge 12 ] || refuse "GRAFANA_ADMIN_PASSWORD is shorter than 12 characters" ;;
esac

tokens=${AISPM_TOKENS_FILE:-/etc/aispm/tokens.toml}
if [ ! -r "$tokens" ]; then
  refuse "the tokens file $tokens cannot be read"
else
  n=0
  # Each `token = "…"` line: its value, checked like a password.
  while IFS= read -r line; do
    case $line in
      token*=*)
        value=${line#*=}
        value=$(printf '%s' "$value" | sed -e 's/#.*$//' -e 's/^[[:space:]]*"//' -e 's/"[[:space:]]*$//')
        n=$((n + 1))
        case $value in
          change-me*) refuse "tokens file: token $n is still an example value ($value)" ;;
          *) [ ${#value} -ge 24 ] || refuse "tokens file: token $n is shorter than 24 characters" ;;
        esac
        ;;
    esac
  done <"$tokens"
fi

read_token=${AISPM_READ_TOKEN_FILE:-/etc/aispm/reporter-read-token}
if [ ! -r "$read_token" ]; then
  refuse "the reporter's read token file $read_token cannot be read"
else
  value=$(tr -d '[:space:]' <"$read_token")
  case $value in
    '') refuse "the reporter's read token file is empty" ;;
    change-me*) refuse "the reporter's read token is still an example value" ;;
    *) [ ${#value} -ge 24 ] || refuse "the reporter's read token is shorter than 24 characters" ;;
  esac
fi

if [ "$problems" -gt 0 ]; then
  echo "preflight: refusing to start: $problems problem(s) above (see compose/README.md#secrets)" >&2
  exit 1
fi
echo "preflight: secrets and tokens are set and none is an example"
