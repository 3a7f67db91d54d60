//! A long connection reports `continue` every interval with the bytes since the previous
//! report; deltas always sum to the totals.

mod support;

use std::time::Duration;

use meshmeter_proxy::{ConnectionEvent, ReportInterval};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn continue_reports_carry_deltas_at_one_second() {
    let upstream = echo_server().await;
    let p = proxy(upstream, |c| {
        c.report_interval = ReportInterval::new(Duration::from_secs(1)).unwrap()
    })
    .await;
    let reports = p.reports.clone();
    let mut c = TcpStream::connect(p.addr).await.unwrap();
    let continues = |n: usize| {
        let reports = reports.clone();
        move || {
            let c: Vec<_> = reports
                .all()
                .into_iter()
                .filter(|r| r.event == ConnectionEvent::Continue)
                .collect();
            (c.len() >= n).then_some(c)
        }
    };

    let mut buf = [0u8; 64];
    c.write_all(&[1u8; 10]).await.unwrap();
    c.read_exact(&mut buf[..10]).await.unwrap();
    let first = eventually(Duration::from_secs(5), continues(1)).await;
    assert_eq!((first[0].bytes.received, first[0].bytes.sent), (10, 10));
    assert_eq!(
        (first[0].bytes.received_total, first[0].bytes.sent_total),
        (10, 10)
    );
    assert_eq!(first[0].duration, None);

    c.write_all(&[2u8; 25]).await.unwrap();
    c.read_exact(&mut buf[..25]).await.unwrap();
    let second = eventually(Duration::from_secs(5), continues(2)).await;
    assert_eq!((second[1].bytes.received, second[1].bytes.sent), (25, 25));
    assert_eq!(
        (second[1].bytes.received_total, second[1].bytes.sent_total),
        (35, 35)
    );

    // A quiet interval reports zero deltas and unchanged totals.
    let third = eventually(Duration::from_secs(5), continues(3)).await;
    assert_eq!((third[2].bytes.received, third[2].bytes.sent), (0, 0));
    assert_eq!(third[2].bytes.received_total, 35);

    c.write_all(&[3u8; 5]).await.unwrap();
    c.shutdown().await.unwrap();
    let rest = read_all(&mut c).await.unwrap();
    assert_eq!(rest, [3u8; 5]);
    drop(c);
    let reports = p.stop().await;
    let all = reports.all();
    assert_eq!(check_connection(&all), (40, 40));
    let interval_gaps: Vec<_> = all
        .windows(2)
        .filter(|w| w[1].event == ConnectionEvent::Continue)
        .map(|w| w[1].time.secs() - w[0].time.secs())
        .collect();
    assert!(
        interval_gaps.iter().all(|&g| (0..=2).contains(&g)),
        "{interval_gaps:?}"
    );
}
