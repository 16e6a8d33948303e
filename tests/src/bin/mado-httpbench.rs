//! Keep-alive HTTP throughput client for the benchmark scripts
//! (scripts/bench_dicomweb.py): `N` clients, each one connection, fetch
//! their share of the URLs (read one per line from stdin) one after the
//! other; every answer must be 200 and is read to the end. Prints the
//! requests per second on stdout, or with `--latency` the median time of
//! one request in milliseconds (each request timed from send to last byte).
//!
//! A compiled client costs the machine far less than a Python one, so on a
//! 2-core machine the figure measures the server, not the client (for every
//! server under test alike).

use anyhow::{bail, Context};
use clap::Parser;
use std::io::BufRead;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "keep-alive HTTP GET throughput (URLs on stdin)")]
struct Args {
    /// Parallel clients (one keep-alive connection each).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Print the median latency (ms) instead of the rate.
    #[arg(long)]
    latency: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let urls: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    if urls.is_empty() || args.clients == 0 {
        bail!("no URLs on stdin, or --clients 0");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h.split_once(':').context("header without ':'")?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
            reqwest::header::HeaderValue::from_str(value.trim())?,
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let latency = args.latency;
    let figure = rt.block_on(async move {
        let mut chunks: Vec<Vec<String>> = vec![Vec::new(); args.clients];
        for (i, u) in urls.iter().enumerate() {
            chunks[i % args.clients].push(u.clone());
        }
        let clients = chunks
            .iter()
            .map(|_| {
                reqwest::Client::builder()
                    .default_headers(headers.clone())
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (client, chunk) in clients.into_iter().zip(chunks) {
            tasks.spawn(async move {
                let mut times = Vec::with_capacity(chunk.len());
                for u in chunk {
                    let t = Instant::now();
                    let r = client.get(&u).send().await?;
                    let status = r.status();
                    r.bytes().await?;
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    if status != reqwest::StatusCode::OK {
                        bail!("{u}: HTTP {status}");
                    }
                    // let the connection task put the connection back into
                    // the pool before the next request looks for one (else
                    // a larger body makes the client open a new connection)
                    tokio::task::yield_now().await;
                }
                anyhow::Ok(times)
            });
        }
        let mut times = Vec::with_capacity(urls.len());
        while let Some(r) = tasks.join_next().await {
            times.extend(r??);
        }
        let rate = urls.len() as f64 / started.elapsed().as_secs_f64();
        if latency {
            times.sort_by(f64::total_cmp);
            return anyhow::Ok(times[times.len() / 2]);
        }
        anyhow::Ok(rate)
    })?;
    if latency {
        println!("{figure:.3}");
    } else {
        println!("{figure:.1}");
    }
    Ok(())
}
