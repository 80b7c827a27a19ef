//! `tern-server`: the tern services on the backends large deployments run.
//!
//! Same settings as `ternd` (flags, `TERN_*` variables, TOML file); the
//! backends are picked by URL: `event_log = "kafka://…"`,
//! `store = "cql://…/keyspace"`, `routes = "redis://…"` (each may also stay
//! embedded), and `services` picks what this process runs, so a deployment
//! runs e.g. two `--services gateway` processes, one persister, one router
//! and one api, each scaled on its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tern_core::log::EventLog;
use tern_core::routes::RouteDirectory;
use tern_core::store::MessageStore;
use ternd::{Backends, TerndConfig};

async fn open(config: TerndConfig) -> anyhow::Result<(TerndConfig, Backends)> {
    // Embedded parts, if any, come from ternd's own opener.
    let needs_embedded =
        config.backends.event_log == "embedded" || config.backends.store == "embedded";
    let embedded = if needs_embedded {
        let mut only_embedded = config.clone();
        only_embedded.backends = ternd::BackendUrls::embedded();
        Some(ternd::open_embedded(&only_embedded)?)
    } else {
        None
    };
    let b = &config.backends;
    let log: Arc<dyn EventLog> = match (b.event_log.split_once("://"), &embedded) {
        (_, Some(e)) if b.event_log == "embedded" => e.log.clone(),
        (Some(("kafka", brokers)), _) => {
            let mut c = tern_kafka::KafkaLogConfig::new(brokers.trim_end_matches('/'));
            c.prefix = config.topic_prefix.clone();
            c.partitions = config.topic_partitions as i32;
            let kafka = tern_kafka::KafkaLog::connect(c)
                .await
                .context("event log")?;
            if config.migrate_only {
                // The shared topics; push topics are per node, made by each.
                use tern_core::topics::*;
                kafka
                    .create_topics(&[INBOUND, DELIVER, ROOMS, GROUP_FEED, ARCHIVE])
                    .await
                    .context("creating topics")?;
            }
            Arc::new(kafka)
        }
        _ => bail!(
            "event_log {:?} is not understood: use embedded or kafka://host:port[,host:port]",
            b.event_log
        ),
    };
    let store: Arc<dyn MessageStore> = match (b.store.split_once("://"), &embedded) {
        (_, Some(e)) if b.store == "embedded" => e.store.clone(),
        (Some(("cql", rest)), _) => {
            let Some((nodes, keyspace)) = rest.split_once('/') else {
                bail!(
                    "store {:?} names no keyspace: use cql://host:port[,host:port]/keyspace",
                    b.store
                );
            };
            let mut c = tern_scylla::ScyllaStoreConfig::new(nodes, keyspace);
            c.nodes = nodes.split(',').map(str::to_owned).collect();
            c.retention = (config.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(config.retention_days) * 86_400));
            Arc::new(
                tern_scylla::ScyllaStore::connect(&c)
                    .await
                    .context("message store")?,
            )
        }
        _ => bail!(
            "store {:?} is not understood: use embedded or cql://host:port[,host:port]/keyspace",
            b.store
        ),
    };
    let routes: Arc<dyn RouteDirectory> = match b.routes.split_once("://") {
        _ if b.routes == "memory" => Arc::new(tern_core::embedded::MemoryRoutes::new()),
        Some(("redis", _)) => Arc::new(
            tern_redis::RedisRoutes::connect(&tern_redis::RedisRoutesConfig::new(&b.routes))
                .await
                .context("route directory")?,
        ),
        _ => bail!(
            "routes {:?} is not understood: use memory or redis://host:port/db",
            b.routes
        ),
    };
    let archive = match &config.archive {
        Some(a) if a.location.starts_with("s3://") => {
            Some(tern_archive_s3::open(&a.location).context("archive")?)
        }
        _ => ternd::open_local_archive(&config)?,
    };
    Ok((
        config,
        Backends {
            log,
            store,
            routes,
            archive,
        },
    ))
}

const ABOUT: &str = "The tern services on Kafka, ScyllaDB (or Cassandra) and Redis; \
    each process runs the ones `services` names.";

#[tokio::main]
async fn main() {
    std::process::exit(
        ternd::main_with("tern-server", ABOUT, ternd::config::Binary::Server, open).await,
    );
}
