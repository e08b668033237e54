//! `clarion warehouse`: rebuilds the warehouse tables from the log.

use clap::Subcommand;
use clarion_runtime::Topic;
use clarion_warehouse::backfill::{self, StartAt};
use clarion_warehouse::Destination;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Config, Node};

/// The state name of backfills (their positions and file names).
const BACKFILL: &str = "backfill";

#[derive(Subcommand)]
pub enum WarehouseCmd {
    /// Rebuild the tables from the log into a directory, with a progress
    /// bar and a final count. Run it against a stopped embedded server or a
    /// distributed deployment; it reads the log, it does not change it.
    Backfill {
        /// An offset (the same in every input partition), or the first
        /// records at or after a time (RFC 3339, or a date: midnight UTC).
        #[arg(long, value_name = "OFFSET|TIME")]
        from: StartAt,
        /// Where the files go: a directory or `s3://BUCKET/PREFIX` (reached
        /// with `[warehouse.s3]`). Default: `<data-dir>/warehouse-backfill`.
        /// Use a fresh one: rows already there are not replaced. Personal
        /// data follows the exporter's policy (docs/warehouse.md).
        #[arg(long, value_name = "DIR")]
        to: Option<String>,
    },
}

pub async fn warehouse(cfg: Config, cmd: WarehouseCmd) -> anyhow::Result<()> {
    match cmd {
        WarehouseCmd::Backfill { from, to } => {
            let to = to.unwrap_or_else(|| {
                cfg.data_dir
                    .join("warehouse-backfill")
                    .display()
                    .to_string()
            });
            let node = Node::open(cfg).await?;
            let (rows, records, dest) = run_backfill(&node, from, &to, true).await?;
            println!("backfill: {rows} rows written from {records} records into {dest}");
            Ok(())
        }
    }
}

/// Exports the log from `from` to its current end into `to`: the rows
/// written, the records read, and the destination.
pub async fn run_backfill(
    node: &Node,
    from: StartAt,
    to: &str,
    show_progress: bool,
) -> anyhow::Result<(u64, u64, String)> {
    let s3 = node.cfg.warehouse.s3.options();
    let dest =
        Destination::open_with(to, std::path::Path::new(to), &s3).map_err(anyhow::Error::msg)?;
    let mut plans = Vec::new();
    let mut total = 0u64;
    for p in 0..node.topics.partitions_of(Topic::Deliveries) {
        let (start, end) = backfill::range(&*node.log, &node.topics, p, from).await?;
        total += end.iter().zip(start).map(|(e, s)| e - s).sum::<u64>();
        plans.push((p, start, end));
    }
    let bar = if show_progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .expect("a valid template"),
    );
    let mut rows = 0;
    for (p, start, end) in plans {
        let exporter = node.exporter(BACKFILL, p, dest.clone());
        exporter.reset_positions(start).await?;
        let b = bar.clone();
        rows += exporter.run_to(end, &mut move |n| b.inc(n)).await?;
    }
    bar.finish();
    Ok((rows, total, dest.url))
}
