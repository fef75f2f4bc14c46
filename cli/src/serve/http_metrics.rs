//! The server's own series: `ebb_http_requests_total{route, status}` (the
//! route template axum matched, `unmatched` otherwise; the status class
//! `2xx`..`5xx`) and `ebb_http_request_duration_seconds{route}`. Routes
//! are the router's fixed templates, so the labels are bounded.
//!
//! Recording takes a read lock and a few relaxed atomic adds; a route's
//! slot is made once, on its first request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ebb_metrics::{Histogram, Scrape};
use parking_lot::RwLock;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
struct RouteStats {
    by_class: [AtomicU64; 5],
    duration: Histogram,
}

/// Requests by route and status class, and their durations.
#[derive(Default)]
pub struct HttpMetrics {
    routes: RwLock<HashMap<String, Arc<RouteStats>>>,
}

impl HttpMetrics {
    /// Records one request's route, status and wall time.
    pub fn record(&self, route: &str, status: u16, secs: f64) {
        let stats = {
            let routes = self.routes.read();
            routes.get(route).cloned()
        };
        let stats = match stats {
            Some(s) => s,
            None => Arc::clone(self.routes.write().entry(route.to_string()).or_default()),
        };
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        stats.by_class[class].fetch_add(1, Ordering::Relaxed);
        stats.duration.observe(secs);
    }

    /// Adds the series to `s`.
    pub fn collect(&self, s: &mut Scrape) {
        let routes = self.routes.read();
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        s.describe(
            "ebb_http_requests_total",
            "HTTP requests by route and status class.",
            ebb_metrics::Kind::Counter,
        );
        for name in &names {
            let r = &routes[*name];
            for (i, class) in CLASSES.iter().enumerate() {
                let n = r.by_class[i].load(Ordering::Relaxed);
                if n > 0 {
                    s.counter(
                        "ebb_http_requests_total",
                        "HTTP requests by route and status class.",
                        &[("route", name), ("status", class)],
                        n as f64,
                    );
                }
            }
        }
        s.describe(
            "ebb_http_request_duration_seconds",
            "Wall time of HTTP requests by route.",
            ebb_metrics::Kind::Histogram,
        );
        for name in names {
            s.histogram(
                "ebb_http_request_duration_seconds",
                "Wall time of HTTP requests by route.",
                &[("route", name)],
                routes[name].duration.snapshot(),
            );
        }
    }
}
