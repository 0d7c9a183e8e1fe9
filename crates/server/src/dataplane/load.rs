//! What a host's sites have been doing (connections of kind `L`): the
//! auto-scaler's deciding host asks every other host that is up for its
//! running totals — per site, the latency of every call it answered since
//! it started (HDR histograms, V2 encoding), and each site's idle and
//! elapsed time — so that its
//! decisions stand on the whole cluster's figures rather than its own (see
//! `crate::autoscale`); a rebalance asks the same to pace its moves (see
//! `crate::rebalance`).

use super::*;
use crate::autoscale::HostLoad;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// A host's running totals as they travel.
#[derive(Serialize, Deserialize)]
struct LoadReport {
    /// Per site (partition; `None`: the coordinator), its V2-encoded HDR
    /// histogram of call latencies (µs).
    latency: Vec<(Option<u32>, serde_bytes::ByteBuf)>,
    /// (partition, idle µs, since start µs) per site.
    sites: Vec<(u32, u64, u64)>,
}

/// How long the asker waits for an answer.
const WAIT: Duration = Duration::from_secs(2);

impl Link {
    /// Host `host`'s running totals (it must be up).
    pub(crate) async fn host_load(&self, host: HostId) -> Result<HostLoad> {
        let address =
            self.routing.load().up.get(&host).cloned().ok_or_else(|| err!(Unavailable, "host {host} is down"))?;
        let body = request_async(&address, LOAD, &(), WAIT).await?;
        let report = decode::<std::result::Result<LoadReport, WireError>>(&body)?.map_err(from_wire_error)?;
        let decode_histogram = |bytes: &[u8]| {
            Deserializer::new()
                .deserialize(&mut &bytes[..])
                .map_err(|e| err!(CorruptData, "host {host} sent a latency histogram that does not decode: {e:?}"))
        };
        let latency = report.latency.iter().map(|(p, h)| Ok((*p, decode_histogram(h)?))).collect::<Result<Vec<_>>>()?;
        let micros = Duration::from_micros;
        let sites = report.sites.into_iter().map(|(p, idle, since)| (p, micros(idle), micros(since))).collect();
        Ok(HostLoad { latency, sites })
    }
}

/// Answer a request for this host's running totals.
pub(super) async fn serve_load(mut s: tokio::net::TcpStream, host: Arc<Host>) {
    if read_body_async(&mut s).await.is_err() {
        return;
    }
    let answer = tokio::task::spawn_blocking(move || report(&HostLoad::of(&host.statistics(WAIT))))
        .await
        .unwrap_or_else(|_| Err(err!(Internal, "gathering this host's figures failed")));
    let _ = write_frame_async(&mut s, &answer.map_err(|e| to_wire_error(&e))).await;
}

fn report(load: &HostLoad) -> Result<LoadReport> {
    let encode_histogram = |h: &hdrhistogram::Histogram<u64>| {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .map_err(|e| err!(Internal, "cannot encode the latency histogram: {e:?}"))?;
        Ok::<_, Error>(bytes)
    };
    let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
    let sites = load.sites.iter().map(|(p, idle, since)| (*p, micros(*idle), micros(*since))).collect();
    let latency = load
        .latency
        .iter()
        .map(|(p, h)| Ok((*p, serde_bytes::ByteBuf::from(encode_histogram(h)?))))
        .collect::<Result<Vec<_>>>()?;
    Ok(LoadReport { latency, sites })
}
