//! The A4 PDF of a report version.
//!
//! Built with krilla: the TrueType font (IPAGothic by default, read at run time from a
//! configured path) is embedded as a subset CID font with a ToUnicode map, so the Japanese
//! text can be searched and extracted; key-image JPEGs are embedded as they are (DCTDecode).
//! Text is laid out here: lines wrap at spaces and between CJK characters (no line starts
//! with closing punctuation), pages break when full. Text is drawn as glyphs, never parsed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use krilla::color::luma;
use krilla::geom::{PathBuilder, Point, Size};
use krilla::image::Image;
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, GlyphId, KrillaGlyph};
use krilla::Document;
use skrifa::instance::{LocationRef, Size as FontSize};
use skrifa::{FontRef, MetadataProvider};

use crate::model::{MeasurementKind, Report, ReportStatus};

/// Debian fonts-ipafont-gothic.
pub const DEFAULT_FONT_PATH: &str = "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf";
/// Largest font file read.
pub const MAX_FONT_BYTES: u64 = 64 * 1024 * 1024;

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 50.0;
const BODY: f32 = 10.0;
const LEADING: f32 = 1.5;

/// Where the font comes from.
#[derive(Debug, Clone)]
pub struct PdfOptions {
    pub font_path: PathBuf,
}

impl Default for PdfOptions {
    fn default() -> Self {
        PdfOptions {
            font_path: PathBuf::from(DEFAULT_FONT_PATH),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("font {path}: {reason}")]
    Font { path: PathBuf, reason: String },
    #[error("key image {0} is not a usable JPEG: {1}")]
    Image(usize, String),
    #[error("PDF: {0}")]
    Pdf(String),
    #[error(transparent)]
    Report(#[from] crate::model::ReportError),
}

/// A loaded font: krilla's handle for embedding and skrifa's metrics for layout.
pub struct LoadedFont {
    data: Arc<Vec<u8>>,
    font: Font,
    upem: f32,
}

impl LoadedFont {
    /// Reads and checks a TrueType/OpenType font file (at most 64 MiB).
    pub fn load(path: &Path) -> Result<LoadedFont, PdfError> {
        let err = |reason: String| PdfError::Font {
            path: path.to_owned(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .len();
        if len > MAX_FONT_BYTES {
            return Err(err("larger than 64 MiB".into()));
        }
        let data = Arc::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
        let upem = {
            let f = FontRef::new(&data).map_err(|e| err(e.to_string()))?;
            f.metrics(FontSize::unscaled(), LocationRef::default())
                .units_per_em as f32
        };
        if upem <= 0.0 {
            return Err(err("no units per em".into()));
        }
        let font =
            Font::new(data.clone().into(), 0).ok_or_else(|| err("not a usable font".into()))?;
        Ok(LoadedFont { data, font, upem })
    }

    /// Glyphs of `text` with advances in em (krilla multiplies by the size).
    fn glyphs(&self, text: &str) -> Vec<KrillaGlyph> {
        let Ok(f) = FontRef::new(&self.data) else {
            return Vec::new();
        };
        let cmap = f.charmap();
        let metrics = f.glyph_metrics(FontSize::unscaled(), LocationRef::default());
        text.char_indices()
            .map(|(i, c)| {
                // Japanese fonts draw U+005C as a yen sign: show the fullwidth reverse solidus
                // glyph instead (the text behind it, for copy and search, stays `\`)
                let shown = if c == '\\' { '\u{FF3C}' } else { c };
                let gid = cmap.map(shown).or_else(|| cmap.map(c)).unwrap_or_default();
                let adv = metrics.advance_width(gid).unwrap_or(0.0) / self.upem;
                KrillaGlyph {
                    glyph_id: GlyphId::new(gid.to_u32()),
                    text_range: i..i + c.len_utf8(),
                    x_advance: adv,
                    x_offset: 0.0,
                    y_offset: 0.0,
                    y_advance: 0.0,
                    location: None,
                }
            })
            .collect()
    }

    fn advances(&self, text: &str) -> Vec<f32> {
        self.glyphs(text).iter().map(|g| g.x_advance).collect()
    }

    fn width(&self, text: &str, size: f32) -> f32 {
        self.advances(text).iter().sum::<f32>() * size
    }
}

/// CJK characters: a line may break before and after each.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3000}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}' | '\u{FF00}'..='\u{FFEF}')
}

/// Characters that must not start a line (JIS X 4051 kinsoku, the common subset).
fn no_line_start(c: char) -> bool {
    "、。，．,.)）」』】〕〉》ー・：；？！!?:;ぁぃぅぇぉっゃゅょァィゥェォッャュョ々".contains(c)
}

/// Wraps a text (paragraphs separated by `\n`) to `max` points at `size`.
fn wrap(font: &LoadedFont, text: &str, size: f32, max: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let para = para.replace('\t', "    ");
        let chars: Vec<char> = para.chars().collect();
        let adv = font.advances(&para);
        let mut line = String::new();
        let mut width = 0.0f32;
        // byte offset in `line` after which a break is allowed
        let mut last_break: Option<usize> = None;
        for (i, &c) in chars.iter().enumerate() {
            let cw = adv.get(i).copied().unwrap_or(0.0) * size;
            if width + cw > max && !line.is_empty() && !no_line_start(c) {
                if c == ' ' {
                    lines.push(line.trim_end().to_owned());
                    line.clear();
                    width = 0.0;
                    last_break = None;
                    continue;
                }
                let cut = if is_cjk(c) {
                    Some(line.len())
                } else {
                    last_break
                };
                match cut {
                    Some(b) if b > 0 => {
                        let rest = line.split_off(b);
                        lines.push(line.trim_end().to_owned());
                        line = rest.trim_start().to_owned();
                    }
                    _ => {
                        lines.push(std::mem::take(&mut line));
                    }
                }
                width = font.width(&line, size);
                last_break = None;
            }
            if is_cjk(c) && !no_line_start(c) && !line.is_empty() {
                last_break = Some(line.len());
            }
            line.push(c);
            width += cw;
            if c == ' ' || (is_cjk(c) && !chars.get(i + 1).is_some_and(|n| no_line_start(*n))) {
                last_break = Some(line.len());
            }
        }
        lines.push(line);
    }
    lines
}

enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        text: String,
    },
    Rule {
        x1: f32,
        x2: f32,
        y: f32,
    },
    Image {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        index: usize,
    },
}

/// Page layout: a cursor that opens a new page when the next block does not fit.
struct Layout<'f> {
    font: &'f LoadedFont,
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl<'f> Layout<'f> {
    fn new(font: &'f LoadedFont) -> Self {
        Layout {
            font,
            pages: vec![Vec::new()],
            y: MARGIN,
        }
    }

    fn ensure(&mut self, h: f32) {
        if self.y + h > PAGE_H - MARGIN - 20.0 && self.y > MARGIN {
            self.pages.push(Vec::new());
            self.y = MARGIN;
        }
    }

    fn push(&mut self, op: Op) {
        if let Some(p) = self.pages.last_mut() {
            p.push(op);
        }
    }

    fn line(&mut self, x: f32, size: f32, text: &str) {
        let h = size * LEADING;
        self.ensure(h);
        self.push(Op::Text {
            x,
            y: self.y + size,
            size,
            text: text.to_owned(),
        });
        self.y += h;
    }

    fn paragraph(&mut self, size: f32, text: &str) {
        for l in wrap(self.font, text, size, PAGE_W - 2.0 * MARGIN) {
            self.line(MARGIN, size, &l);
        }
    }

    fn heading(&mut self, text: &str) {
        self.ensure(12.0 * LEADING + BODY * LEADING * 2.0 + 6.0);
        self.y += 6.0;
        self.line(MARGIN, 12.0, text);
        let y = self.y - 3.0;
        self.push(Op::Rule {
            x1: MARGIN,
            x2: PAGE_W - MARGIN,
            y,
        });
        self.y += 2.0;
    }

    /// One table row; each cell cut to its column width.
    fn row(&mut self, cols: &[(f32, f32)], cells: &[String]) {
        self.ensure(BODY * LEADING);
        for ((x, w), text) in cols.iter().zip(cells) {
            let mut t = text.clone();
            while !t.is_empty() && self.font.width(&t, BODY) > *w - 4.0 {
                t.pop();
            }
            self.push(Op::Text {
                x: MARGIN + x,
                y: self.y + BODY,
                size: BODY,
                text: t,
            });
        }
        self.y += BODY * LEADING;
    }
}

fn status_text(s: ReportStatus) -> &'static str {
    match s {
        ReportStatus::Preliminary => "PRELIMINARY / 仮報告",
        ReportStatus::Final => "FINAL / 確定",
        ReportStatus::Amended => "AMENDED / 修正",
    }
}

fn fmt_num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Value column of the measurements table.
pub(crate) fn measurement_text(kind: &MeasurementKind, uncalibrated: bool) -> String {
    let unc = if uncalibrated {
        " (uncalibrated / 未校正)"
    } else {
        ""
    };
    match kind {
        MeasurementKind::Length { mm } => format!("Length {} mm{unc}", fmt_num(*mm)),
        MeasurementKind::Angle { deg } => format!("Angle {}°", fmt_num(*deg)),
        MeasurementKind::EllipseRoi {
            area_mm2,
            mean,
            sd,
            min,
            max,
            unit,
        } => {
            let u = if unit == "1" {
                String::new()
            } else {
                format!(" {unit}")
            };
            format!(
                "Area {} mm²{unc}; mean {}{u}, SD {}, min {}, max {}",
                fmt_num(*area_mm2),
                fmt_num(*mean),
                fmt_num(*sd),
                fmt_num(*min),
                fmt_num(*max)
            )
        }
    }
}

/// Renders the report (validated first) as an A4 PDF.
pub fn render(report: &Report, options: &PdfOptions) -> Result<Vec<u8>, PdfError> {
    report.validate()?;
    let font = LoadedFont::load(&options.font_path)?;
    render_with_font(report, &font)
}

/// Renders with an already loaded font (load it once per process).
pub fn render_with_font(report: &Report, font: &LoadedFont) -> Result<Vec<u8>, PdfError> {
    report.validate()?;
    let mut images = Vec::new();
    for (i, k) in report.key_images.iter().enumerate() {
        if let Some(j) = &k.jpeg {
            let img =
                Image::from_jpeg(j.clone().into(), true).map_err(|e| PdfError::Image(i, e))?;
            images.push((i, img));
        }
    }

    let mut l = Layout::new(font);
    let s = &report.study;
    l.line(MARGIN, 16.0, "画像診断報告書 / Imaging Report");
    l.line(
        MARGIN,
        BODY,
        &format!(
            "Status / 状態: {}    Version / 版: {}    Signed / 署名日時: {}",
            status_text(report.status),
            report.version,
            report.signed_at.format("%Y-%m-%d %H:%M UTC")
        ),
    );
    if let Some(reason) = &report.amendment_reason {
        l.paragraph(BODY, &format!("Reason for amendment / 修正理由: {reason}"));
    }
    l.heading("Study / 検査");
    let name = s.patient_name.replace('^', " ");
    l.paragraph(
        BODY,
        &format!("Patient / 患者: {}    ID: {}", name.trim(), s.patient_id),
    );
    l.paragraph(
        BODY,
        &format!(
            "Accession / 受付番号: {}    Study date / 検査日: {}    Modality: {}",
            s.accession_number, s.study_date, s.modality
        ),
    );
    if !s.study_description.is_empty() {
        l.paragraph(
            BODY,
            &format!("Description / 検査名: {}", s.study_description),
        );
    }
    l.paragraph(
        BODY,
        &format!("Study Instance UID: {}", s.study_instance_uid),
    );
    l.paragraph(
        BODY,
        &format!(
            "Reader / 読影医: {}    {}",
            report.author.name.replace('^', " ").trim(),
            report.author.organisation
        ),
    );

    for (title, text) in [
        ("Findings / 所見", &report.sections.findings),
        ("Impression / 診断", &report.sections.impression),
        ("Recommendation / 推奨", &report.sections.recommendation),
    ] {
        if text.trim().is_empty() {
            continue;
        }
        l.heading(title);
        l.paragraph(BODY, text);
    }

    if !report.measurements.is_empty() {
        l.heading("Measurements / 計測");
        let cols = [(0.0, 22.0), (22.0, 110.0), (132.0, 265.0), (397.0, 98.0)];
        l.row(
            &cols,
            &["#".into(), "Label".into(), "Value".into(), "Image".into()],
        );
        for (i, m) in report.measurements.iter().enumerate() {
            let uid = &m.image.sop_instance_uid;
            let tail = &uid[uid.len().saturating_sub(12)..];
            let img = match m.image.frame {
                Some(f) => format!("…{tail} #{f}"),
                None => format!("…{tail}"),
            };
            let text = measurement_text(&m.value, m.uncalibrated);
            // the value may not fit its column: continue it on the next lines
            let parts = wrap(font, &text, BODY, cols[2].1 - 4.0);
            for (j, p) in parts.iter().enumerate() {
                let cells = if j == 0 {
                    vec![
                        format!("{}", i + 1),
                        m.label.clone(),
                        p.clone(),
                        img.clone(),
                    ]
                } else {
                    vec![String::new(), String::new(), p.clone(), String::new()]
                };
                l.row(&cols, &cells);
            }
        }
    }

    if !images.is_empty() {
        l.heading("Key images / キー画像");
        let box_w = (PAGE_W - 2.0 * MARGIN - 15.0) / 2.0;
        let box_h = 220.0;
        for (n, (i, img)) in images.iter().enumerate() {
            let (iw, ih) = img.size();
            let scale = (box_w / iw.max(1) as f32).min(box_h / ih.max(1) as f32);
            let (w, h) = (iw as f32 * scale, ih as f32 * scale);
            let col = n % 2;
            if col == 0 {
                l.ensure(box_h + BODY * LEADING * 2.0);
            }
            let x = MARGIN + col as f32 * (box_w + 15.0);
            let y0 = l.y;
            l.push(Op::Image {
                x,
                y: y0,
                w,
                h,
                index: *i,
            });
            let k = &report.key_images[*i];
            let mut cap = k.caption.clone();
            if let (Some(c), Some(w)) = (k.window_center, k.window_width) {
                cap = format!("{cap} (W {} / L {})", fmt_num(w), fmt_num(c));
            }
            let cap: String = wrap(font, cap.trim(), 8.0, box_w)
                .into_iter()
                .next()
                .unwrap_or_default();
            l.push(Op::Text {
                x,
                y: y0 + box_h + 10.0,
                size: 8.0,
                text: cap,
            });
            if col == 1 || n + 1 == images.len() {
                l.y = y0 + box_h + 10.0 + 8.0 * LEADING;
            }
        }
    }

    // draw
    let mut doc = Document::new();
    doc.set_metadata(
        Metadata::new()
            .title(format!(
                "Imaging report {} v{}",
                report.report_id, report.version
            ))
            .creator("Mado".into())
            .language("ja".into()),
    );
    let total = l.pages.len();
    let by_index: Vec<(usize, Image)> = images;
    for (p, ops) in l.pages.iter().enumerate() {
        let settings = PageSettings::new(
            Size::from_wh(PAGE_W, PAGE_H).ok_or_else(|| PdfError::Pdf("page size".into()))?,
        );
        let mut page = doc.start_page_with(settings);
        let mut surface = page.surface();
        surface.set_fill(Some(Fill {
            paint: luma::Color::black().into(),
            ..Fill::default()
        }));
        let footer = format!(
            "{} v{} — {} / {}",
            report.report_id,
            report.version,
            p + 1,
            total
        );
        let footer_ops = [Op::Text {
            x: MARGIN,
            y: PAGE_H - MARGIN + 15.0,
            size: 8.0,
            text: footer,
        }];
        for op in ops.iter().chain(footer_ops.iter()) {
            match op {
                Op::Text { x, y, size, text } => {
                    if text.is_empty() {
                        continue;
                    }
                    let glyphs = font.glyphs(text);
                    surface.draw_glyphs(
                        Point::from_xy(*x, *y),
                        &glyphs,
                        font.font.clone(),
                        text,
                        *size,
                        false,
                    );
                }
                Op::Rule { x1, x2, y } => {
                    let mut pb = PathBuilder::new();
                    pb.move_to(*x1, *y);
                    pb.line_to(*x2, *y);
                    if let Some(path) = pb.finish() {
                        surface.set_fill(None);
                        surface.set_stroke(Some(Stroke {
                            width: 0.5,
                            ..Stroke::default()
                        }));
                        surface.draw_path(&path);
                        surface.set_stroke(None);
                        surface.set_fill(Some(Fill::default()));
                    }
                }
                Op::Image { x, y, w, h, index } => {
                    if let Some((_, img)) = by_index.iter().find(|(i, _)| i == index) {
                        let size = Size::from_wh(*w, *h)
                            .ok_or_else(|| PdfError::Pdf("image size".into()))?;
                        surface.push_transform(&krilla::geom::Transform::from_translate(*x, *y));
                        surface.draw_image(img.clone(), size);
                        surface.pop();
                    }
                }
            }
        }
        surface.finish();
        page.finish();
    }
    // Display, not Debug: the Debug form of an image error carries the image
    doc.finish().map_err(|e| PdfError::Pdf(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn font() -> Option<LoadedFont> {
        LoadedFont::load(Path::new(DEFAULT_FONT_PATH)).ok()
    }

    #[test]
    fn wrap_breaks_japanese_and_english_within_width() {
        let Some(f) = font() else {
            eprintln!("skipped: {DEFAULT_FONT_PATH} missing");
            return;
        };
        let text = "右肺上葉に径12mmの結節を認めます。前回検査と比較して増大しています。".repeat(4)
            + "\nThe quick brown fox jumps over the lazy dog again and again and again.";
        let lines = wrap(&f, &text, 10.0, 200.0);
        assert!(lines.len() > 5, "{lines:?}");
        for l in &lines {
            assert!(f.width(l, 10.0) <= 200.0 + 10.0, "{l} too wide");
            assert!(!l.starts_with('。') && !l.starts_with('、'), "{l}");
        }
        assert_eq!(
            lines.concat().replace(' ', ""),
            text.replace(['\n', ' '], "")
        );
    }
}
