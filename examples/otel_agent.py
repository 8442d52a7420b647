#!/usr/bin/env python3
"""An agent instrumented with OpenTelemetry, exporting its spans to aispm over OTLP/HTTP.

The spans follow the OpenTelemetry GenAI and MCP semantic conventions, as an agent framework
or an AI/MCP gateway emits them; aispm's ingest turns the tool, agent, model and MCP spans into
decision events (docs/producers.md). One run is one agent invocation:

    invoke_agent triage            (gen_ai.operation.name = invoke_agent)
      chat gpt-4o                  (a model call: ungoverned, medium risk by default)
      tools/call create_issue      (an MCP tool call a gateway judged: aispm.verdict = allow)
      execute_tool run_shell       (a tool call nothing governed: counts against coverage)
      GET /healthz                 (not GenAI: counted and ignored)

    python3 examples/otel_agent.py --endpoint http://127.0.0.1:8080/v1/traces \\
        --token demo-acme-gateway-token [--environment production] [--gzip] [--tenant acme]

The token needs the `emit` scope; spans without `aispm.tenant_id` belong to the token's tenant
when it has exactly one. Prints one JSON line: the trace id and each span's id and name, so the
caller can look the decisions up (`GET /v1/tenants/{tenant}/events/{event_id}` on the
projector; the event id is derived from the trace and span ids). Exits non-zero when the
export was refused.

Requires: pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind


class RecordingExporter(OTLPSpanExporter):
    """The OTLP exporter, remembering what each export returned (the SDK only logs it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.results = []
        self.spans = []

    def export(self, spans):
        result = super().export(spans)
        self.results.append(result)
        self.spans.extend(spans)
        return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default="http://127.0.0.1:8080/v1/traces")
    ap.add_argument("--token", required=True)
    ap.add_argument("--agent", default="otel-triage-agent")
    ap.add_argument("--environment", default="production")
    ap.add_argument("--tenant", help="set aispm.tenant_id on the resource")
    ap.add_argument("--gzip", action="store_true", help="compress the export")
    args = ap.parse_args()

    attributes = {
        "service.name": "triage-bot",
        "deployment.environment.name": args.environment,
    }
    if args.tenant:
        attributes["aispm.tenant_id"] = args.tenant
    exporter = RecordingExporter(
        endpoint=args.endpoint,
        headers={"Authorization": f"Bearer {args.token}"},
        compression=Compression.Gzip if args.gzip else Compression.NoCompression,
        timeout=30,
    )
    provider = TracerProvider(resource=Resource.create(attributes))
    # Batched, as a real agent exports: the invocation's spans travel together, so ingest finds
    # the agent of the tool and model spans on their invoke_agent parent.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    tracer = provider.get_tracer("aispm.examples.otel_agent", "1.0.0")

    with tracer.start_as_current_span(
        f"invoke_agent {args.agent}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": args.agent,
            "gen_ai.agent.name": args.agent,
            "enduser.id": "alice@example.com",
        },
    ):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "enduser.id": "alice@example.com",
            },
        ):
            pass
        # The gateway in front of the MCP server judged this call and says so.
        with tracer.start_as_current_span(
            "tools/call create_issue",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "mcp.method.name": "tools/call",
                "gen_ai.tool.name": "create_issue",
                "server.address": "github-mcp",
                "enduser.id": "alice@example.com",
                "aispm.verdict": "allow",
                "aispm.control_id": "ctl-otel-mcp",
                "aispm.policy_id": "pol-mcp-write",
                "aispm.mode": "enforced",
                "aispm.risk": "medium",
                "aispm.repo": "acme/support",
            },
        ):
            pass
        # Nothing governed this one: an observed, ungoverned command.
        with tracer.start_as_current_span(
            "execute_tool run_shell",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "run_shell",
                "gen_ai.tool.type": "function",
                "enduser.id": "alice@example.com",
            },
        ):
            pass
        with tracer.start_as_current_span(
            "GET /healthz", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
        ):
            pass
    provider.force_flush()
    provider.shutdown()

    failed = [r for r in exporter.results if r != SpanExportResult.SUCCESS]
    out = {
        "exports": len(exporter.results),
        "failed": len(failed),
        "trace_id": None,
        "spans": [],
    }
    for s in exporter.spans:
        out["trace_id"] = f"{s.context.trace_id:032x}"
        out["spans"].append({"name": s.name, "span_id": f"{s.context.span_id:016x}"})
    print(json.dumps(out))
    return 1 if failed or not exporter.results else 0


if __name__ == "__main__":
    sys.exit(main())
