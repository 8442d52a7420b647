#!/bin/sh
# The compose deployment's Kafka TLS material, made once (keytool only: it runs in the
# apache/kafka image, and in the tests on the host's JDK):
#   ca.p12      the CA's key pair (stays in the volume; re-run with an empty directory to rotate)
#   ca.pem      the CA certificate: what every client trusts (ssl.ca.location)
#   broker.p12  the broker's key and its certificate, signed by the CA, for the names in
#               AISPM_KAFKA_TLS_HOSTS (default kafka,localhost,127.0.0.1)
# Environment: AISPM_KAFKA_TLS_PASSWORD (required: the PKCS#12 stores' password),
# AISPM_KAFKA_CERTS_DIR (default /etc/kafka/certs), AISPM_KAFKA_TLS_HOSTS.
set -eu
dir=${AISPM_KAFKA_CERTS_DIR:-/etc/kafka/certs}
pw=${AISPM_KAFKA_TLS_PASSWORD:?AISPM_KAFKA_TLS_PASSWORD is required}
hosts=${AISPM_KAFKA_TLS_HOSTS:-kafka,localhost,127.0.0.1}
mkdir -p "$dir"
if [ -s "$dir/broker.p12" ] && [ -s "$dir/ca.pem" ]; then
  echo "certs: $dir holds a CA and a broker certificate; nothing to do"
  exit 0
fi
san=
for h in $(echo "$hosts" | tr ',' ' '); do
  case $h in
    *[!0-9.]*) entry="dns:$h" ;;
    *) entry="ip:$h" ;;
  esac
  san=${san:+$san,}$entry
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
kt() { keytool "$@" -storetype PKCS12 -storepass "$pw" -noprompt >/dev/null 2>&1 || { echo "certs: keytool $1 failed" >&2; keytool "$@" -storetype PKCS12 -storepass "$pw" -noprompt >&2; exit 1; }; }
kt -genkeypair -alias ca -dname "CN=aispm Kafka CA" -keyalg EC -groupname secp256r1 \
  -validity 3650 -ext bc:c -keystore "$work/ca.p12"
keytool -exportcert -rfc -alias ca -keystore "$work/ca.p12" -storetype PKCS12 -storepass "$pw" > "$work/ca.pem"
kt -genkeypair -alias broker -dname "CN=kafka" -keyalg EC -groupname secp256r1 \
  -validity 825 -keystore "$work/broker.p12"
keytool -certreq -alias broker -keystore "$work/broker.p12" -storetype PKCS12 -storepass "$pw" \
  | keytool -gencert -alias ca -keystore "$work/ca.p12" -storetype PKCS12 -storepass "$pw" \
      -ext "SAN=$san" -ext "EKU=serverAuth" -rfc -validity 825 > "$work/broker.pem"
kt -importcert -alias ca -file "$work/ca.pem" -keystore "$work/broker.p12"
kt -importcert -alias broker -file "$work/broker.pem" -keystore "$work/broker.p12"
chmod 644 "$work/ca.pem"
chmod 640 "$work/broker.p12" "$work/ca.p12"
mv "$work/ca.p12" "$work/ca.pem" "$work/broker.p12" "$dir/"
echo "certs: made a CA and a broker certificate for $san in $dir"
