//! One Prometheus registry per process. Names are `aispm_<service>_<noun>_<unit>`; labels come
//! from small fixed sets only (never tenant or event ids).

use crate::Result;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process's metrics registry, scoped to one service name.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    service: &'static str,
}

impl Metrics {
    /// A registry with `aispm_build_info`, the process collector (CPU, RSS, open fds) and
    /// glibc's heap (`aispm_<service>_malloc_heap_bytes`, [`crate::malloc::heap`]).
    pub fn new(service: &'static str) -> Result<Self> {
        let heap = crate::malloc::HeapCollector::new(format!("aispm_{service}_malloc_heap_bytes"))?;
        Self::with_heap(service, Box::new(heap))
    }

    /// As [`Metrics::new`], with `heap` in place of glibc's heap: for a service whose `malloc`
    /// is another allocator (the projector's jemalloc), which reports its own statistics.
    pub fn with_heap(
        service: &'static str,
        heap: Box<dyn prometheus::core::Collector>,
    ) -> Result<Self> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "aispm_build_info",
                "Build information of the running service (always 1).",
            ),
            &["service", "version"],
        )?;
        build
            .with_label_values(&[service, env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(heap)?;
        Ok(Metrics { registry, service })
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `aispm_<service>_<name>`.
    pub fn name(&self, name: &str) -> String {
        format!("aispm_{}_{}", self.service, name)
    }

    /// Registers a counter `aispm_<service>_<name>` (name should end in `_total`).
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(self.name(name), help), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    /// Registers a gauge `aispm_<service>_<name>`.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(self.name(name), help), labels)?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    /// Registers a histogram `aispm_<service>_<name>` (name ends in `_seconds` or a count noun).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<HistogramVec> {
        let h = HistogramVec::new(
            HistogramOpts::new(self.name(name), help).buckets(buckets),
            labels,
        )?;
        self.registry.register(Box::new(h.clone()))?;
        Ok(h)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Buckets for latencies from 0.5 ms to 10 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

/// Buckets for batch sizes from 1 to 100 000.
pub fn size_buckets() -> Vec<f64> {
    vec![
        1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0,
        100000.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_build_info() {
        let m = Metrics::new("projector").unwrap();
        let c = m
            .counter("events_applied_total", "Events applied.", &["topic"])
            .unwrap();
        c.with_label_values(&["decisions"]).inc();
        let text = m.render();
        assert!(text.contains("aispm_projector_events_applied_total{topic=\"decisions\"} 1"));
        assert!(text.contains("aispm_build_info{service=\"projector\""));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(text.contains("aispm_projector_malloc_heap_bytes{state=\"in_use\"}"));
        }
        assert!(
            m.counter("events_applied_total", "dup", &["topic"])
                .is_err()
        );
    }
}
