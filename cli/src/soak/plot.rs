//! rss.svg and rss.png: RSS, the budget's reserved bytes and the accounted
//! live bytes over time (MiB), the verdict's bounds drawn (the warm-up's
//! end, baseline + 1.3 x live in steady state), compactions marked along
//! the bottom and pressure level changes as vertical lines.
//!
//! Text needs a font (plotters lays text out itself, for the SVG too): the
//! first DejaVu or Liberation sans found under /usr/share/fonts,
//! registered with ab_glyph; without one both are drawn without text. The
//! PNG is rendered into a buffer and encoded here ([`png`]: zlib from
//! miniz_oxide, one IDAT), so no image crate is pulled in.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::sample::Sample;
use super::verdict::{BOUNDED_FACTOR, Verdict};

const MIB: f64 = 1048576.0;

/// Draws both files.
///
/// # Errors
///
/// When a file cannot be written.
pub fn draw(
    dir: &Path,
    samples: &[Sample],
    baseline: u64,
    verdict: &Verdict,
) -> Result<(), String> {
    const W: u32 = 1200;
    const H: u32 = 600;
    let text = register_font();
    let svg = dir.join("rss.svg");
    {
        let root = SVGBackend::new(&svg, (W, H)).into_drawing_area();
        chart(&root, samples, baseline, verdict, text)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut rgb = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
        chart(&root, samples, baseline, verdict, text)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let path = dir.join("rss.png");
    std::fs::write(&path, png(&rgb, W, H)).map_err(|e| format!("{}: {e}", path.display()))
}

/// An 8-bit RGB image as a PNG file: signature, IHDR, one zlib IDAT of
/// the rows (filter 0), IEND.
pub fn png(rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let row = width as usize * 3;
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for r in rgb.chunks(row).take(height as usize) {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// CRC-32 (ISO-HDLC, the PNG one), bitwise: a few MB once per soak.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Registers a system sans font for the bitmap backend; false if none.
fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        ];
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // The font lives as long as the process (registered once).
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    samples: &[Sample],
    baseline: u64,
    verdict: &Verdict,
    text: bool,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let t_max = samples.last().map_or(1.0, |s| s.t_secs).max(1.0);
    let bound =
        |s: &Sample| (baseline as f64 + BOUNDED_FACTOR * s.accounted_live_bytes() as f64) / MIB;
    let y_max = samples
        .iter()
        .map(|s| {
            (s.rss_bytes as f64 / MIB)
                .max(bound(s))
                .max(s.reserved_bytes as f64 / MIB)
        })
        .fold(1.0, f64::max)
        * 1.1;
    let mut builder = ChartBuilder::on(root);
    builder.margin(15);
    if text {
        builder
            .caption(
                format!("ebb soak: {}", if verdict.passed { "PASS" } else { "FAIL" }),
                ("sans-serif", 24),
            )
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("MiB")
            .draw()
            .map_err(err)?;
    }
    let warmup = verdict.warmup_secs;
    // The warm-up's end.
    chart
        .draw_series(LineSeries::new(
            [(warmup, 0.0), (warmup, y_max)],
            BLACK.mix(0.3).stroke_width(1),
        ))
        .map_err(err)?;
    // Pressure level changes.
    for w in samples.windows(2) {
        if w[1].level_changes != w[0].level_changes {
            let color = match w[1].pressure_level {
                2 => RED,
                1 => MAGENTA,
                _ => GREEN,
            };
            chart
                .draw_series(LineSeries::new(
                    [(w[1].t_secs, 0.0), (w[1].t_secs, y_max)],
                    color.mix(0.4).stroke_width(1),
                ))
                .map_err(err)?;
        }
    }
    // Compactions, ticks along the bottom.
    let ticks: Vec<(f64, f64)> = samples
        .windows(2)
        .filter(|w| w[1].compaction_events > w[0].compaction_events)
        .map(|w| (w[1].t_secs, y_max * 0.01))
        .collect();
    chart
        .draw_series(ticks.iter().map(|p| Circle::new(*p, 2, CYAN.filled())))
        .map_err(err)?;
    type Value = Box<dyn Fn(&Sample) -> f64>;
    let series: [(&str, RGBColor, Value); 3] = [
        ("RSS", BLUE, Box::new(|s: &Sample| s.rss_bytes as f64 / MIB)),
        (
            "budget reserved",
            RGBColor(230, 140, 0),
            Box::new(|s: &Sample| s.reserved_bytes as f64 / MIB),
        ),
        (
            "accounted (arena live + index + pool)",
            RGBColor(0, 140, 0),
            Box::new(|s: &Sample| s.accounted_live_bytes() as f64 / MIB),
        ),
    ];
    for (name, color, f) in series {
        let line = chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (s.t_secs, f(s))),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            line.label(name).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    let bounded = chart
        .draw_series(LineSeries::new(
            samples
                .iter()
                .filter(|s| s.t_secs >= warmup)
                .map(|s| (s.t_secs, bound(s))),
            RED.mix(0.6).stroke_width(1),
        ))
        .map_err(err)?;
    if text {
        bounded
            .label("bound: baseline + 1.3 x live")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.mix(0.6).stroke_width(1)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_and_png_framing() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        let png = super::png(&[255, 0, 0, 0, 255, 0], 2, 1);
        assert_eq!(&png[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
