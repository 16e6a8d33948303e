//! Rendering one frame of a stored instance as an 8-bit PNG.
//!
//! Pipeline (PS3.4 Grayscale Standard Display Function chain, simplified):
//! decode with dicom-pixeldata → Modality LUT (rescale slope/intercept) →
//! linear VOI window from the file's first Window Center/Width, else the
//! frame's min/max → MONOCHROME1 inverted → 8-bit grayscale PNG. Colour
//! images (RGB, or YBR_FULL converted to RGB) are scaled to 8 bits and
//! passed through. Everything here is synchronous and CPU-bound: call it
//! through [`crate::services::cpu::run`].

use dicom_core::PrimitiveValue;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::{
    ConvertOptions, DecodedPixelData, ModalityLutOption, PhotometricInterpretation, PixelDecoder,
    VoiLutOption,
};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Bump when the output of [`render_png`] changes, to invalidate ETags.
pub const RENDER_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the object is not a readable DICOM file: {0}")]
    Parse(String),
    #[error("the instance has no frame {0}")]
    NoSuchFrame(u32),
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The object's declared image does not fit its data (sizes, frames).
    #[error("malformed image: {0}")]
    Malformed(String),
    #[error("pixel data could not be decoded: {0}")]
    Decode(String),
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// An 8-bit image ready for encoding.
#[derive(Debug, Clone)]
pub struct Image8 {
    pub width: u32,
    pub height: u32,
    /// 1 (grayscale) or 3 (RGB, interleaved).
    pub channels: u8,
    pub pixels: Vec<u8>,
}

/// Render `frame` (0-based) of the DICOM Part 10 file `bytes` as PNG.
pub fn render_png(bytes: &[u8], frame: u32) -> Result<Vec<u8>, RenderError> {
    let image = render_frame(bytes, frame)?;
    encode_png(&image)
}

/// Decode and window `frame` (0-based) of the DICOM Part 10 file `bytes`.
pub fn render_frame(bytes: &[u8], frame: u32) -> Result<Image8, RenderError> {
    Ok(decode_frame(bytes, frame)?.to_image8(None))
}

/// A decoded frame before windowing: grayscale values after the Modality
/// LUT, or an 8-bit colour image.
#[derive(Debug)]
pub enum DecodedFrame {
    Gray {
        width: u32,
        height: u32,
        /// Values after the Modality LUT; empty when `ints` holds them.
        values: Vec<f32>,
        /// When every value is an integer in a range of at most 65536:
        /// `(lo, value - lo)` per pixel, so windowing is one table lookup
        /// per pixel (the usual CT/MR/CR case).
        ints: Option<(i32, Vec<u16>)>,
        /// The file's first window (center, width), if any.
        window: Option<(f64, f64)>,
        /// Min/max of the finite values.
        range: (f32, f32),
        /// MONOCHROME1.
        invert: bool,
    },
    Color(Image8),
}

/// The VOI LUT function of a window (PS3.3 C.11.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// An explicit window requested by the client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: WindowFunction,
}

impl DecodedFrame {
    pub fn width(&self) -> u32 {
        match self {
            DecodedFrame::Gray { width, .. } => *width,
            DecodedFrame::Color(i) => i.width,
        }
    }
    pub fn height(&self) -> u32 {
        match self {
            DecodedFrame::Gray { height, .. } => *height,
            DecodedFrame::Color(i) => i.height,
        }
    }

    /// Apply `window` (else the file's window, else min/max) to 8 bits.
    pub fn to_image8(&self, window: Option<Window>) -> Image8 {
        match self {
            DecodedFrame::Color(img) => img.clone(),
            DecodedFrame::Gray {
                width,
                height,
                values,
                ints,
                window: file_window,
                range,
                invert,
            } => {
                let w = window.unwrap_or_else(|| {
                    let (center, width) = file_window.unwrap_or_else(|| {
                        let (min, max) = (f64::from(range.0), f64::from(range.1));
                        if min > max {
                            (0.0, 1.0)
                        } else {
                            ((min + max) / 2.0 + 0.5, (max - min + 1.0).max(1.0))
                        }
                    });
                    Window {
                        center,
                        width,
                        function: WindowFunction::Linear,
                    }
                });
                let lut = Lut8::new(w, *range);
                let invert = *invert;
                if let (Some((lo, idx)), Some((tlo, table))) = (ints, &lut.table) {
                    if lo == tlo {
                        let table: Vec<u8> = if invert {
                            table.iter().map(|y| 255 - y).collect()
                        } else {
                            table.clone()
                        };
                        let pixels = idx
                            .iter()
                            .map(|&i| table.get(usize::from(i)).copied().unwrap_or(0))
                            .collect();
                        return Image8 {
                            width: *width,
                            height: *height,
                            channels: 1,
                            pixels,
                        };
                    }
                }
                if let Some((lo, idx)) = ints {
                    // (Not reached: the table always covers an integer range.)
                    let pixels = idx
                        .iter()
                        .map(|&i| {
                            let y = lut.compute((lo + i32::from(i)) as f32);
                            if invert {
                                255 - y
                            } else {
                                y
                            }
                        })
                        .collect();
                    return Image8 {
                        width: *width,
                        height: *height,
                        channels: 1,
                        pixels,
                    };
                }
                let pixels = values
                    .iter()
                    .map(|v| {
                        let y = lut.apply(*v);
                        if invert {
                            255 - y
                        } else {
                            y
                        }
                    })
                    .collect();
                Image8 {
                    width: *width,
                    height: *height,
                    channels: 1,
                    pixels,
                }
            }
        }
    }

    /// Approximate heap size.
    pub fn weight(&self) -> usize {
        match self {
            DecodedFrame::Gray { values, ints, .. } => {
                values.len() * 4 + ints.as_ref().map_or(0, |(_, v)| v.len() * 2)
            }
            DecodedFrame::Color(i) => i.pixels.len(),
        }
    }
}

/// A window as a table over the integer range of the values when it is
/// small (the usual case), else computed per pixel.
struct Lut8 {
    window: Window,
    linear: LinearWindow,
    table: Option<(i32, Vec<u8>)>,
}

impl Lut8 {
    fn new(window: Window, range: (f32, f32)) -> Self {
        let linear = match window.function {
            // LINEAR_EXACT is LINEAR with c + 0.5 and w + 1.
            WindowFunction::LinearExact => {
                LinearWindow::new(window.center + 0.5, window.width + 1.0)
            }
            _ => LinearWindow::new(window.center, window.width),
        };
        let mut lut = Lut8 {
            window,
            linear,
            table: None,
        };
        let (lo, hi) = range;
        if lo.is_finite() && hi.is_finite() && hi >= lo && hi - lo <= 65536.0 {
            let lo_i = lo.floor() as i32;
            let hi_i = hi.ceil() as i32;
            let table = (lo_i..=hi_i).map(|x| lut.compute(x as f32)).collect();
            lut.table = Some((lo_i, table));
        }
        lut
    }

    fn compute(&self, v: f32) -> u8 {
        match self.window.function {
            WindowFunction::Sigmoid => {
                let w = self.window.width.max(1.0);
                let y = 255.0 / (1.0 + (-4.0 * (f64::from(v) - self.window.center) / w).exp());
                y.round().clamp(0.0, 255.0) as u8
            }
            _ => self.linear.apply(f64::from(v)),
        }
    }

    fn apply(&self, v: f32) -> u8 {
        if let Some((lo, table)) = &self.table {
            if v.fract() == 0.0 {
                let i = v as i64 - i64::from(*lo);
                if let Some(y) = usize::try_from(i).ok().and_then(|i| table.get(i)) {
                    return *y;
                }
            }
        }
        self.compute(v)
    }
}

/// Most samples (Rows × Columns × Samples per Pixel) of a frame rendered:
/// the float buffer of one frame stays within 512 MiB.
pub const MAX_FRAME_SAMPLES: u64 = 1 << 27;

/// Memory one render of an instance may hold: the fetched object and its
/// parsed copy, plus per pixel the decoded samples, the float values after
/// the Modality LUT and the 8-bit image (colour: three of each).
pub fn render_weight(size: u64, rows: u64, cols: u64) -> u64 {
    size.saturating_mul(2)
        .saturating_add(rows.saturating_mul(cols).saturating_mul(24))
}

/// Decode `frame` (0-based) of the DICOM Part 10 file `bytes` without
/// windowing, under the default structure limits.
pub fn decode_frame(bytes: &[u8], frame: u32) -> Result<DecodedFrame, RenderError> {
    decode_frame_with(bytes, frame, &mado_core::guard::Limits::default())
}

/// [`decode_frame`] under `limits`: the structure is checked before the
/// parse ([`mado_core::guard`]), and the declared image size and frame
/// count against the pixel data really stored before anything is
/// allocated for them.
pub fn decode_frame_with(
    bytes: &[u8],
    frame: u32,
    limits: &mado_core::guard::Limits,
) -> Result<DecodedFrame, RenderError> {
    mado_core::guard::check_part10(bytes, limits).map_err(|e| RenderError::Parse(e.to_string()))?;
    let obj = OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|e| RenderError::Parse(e.to_string()))?;

    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    match TransferSyntaxRegistry.get(&ts_uid) {
        None => {
            return Err(RenderError::Unsupported(format!(
                "transfer syntax {ts_uid}"
            )))
        }
        Some(ts) if !ts.can_decode_all() => {
            return Err(RenderError::Unsupported(format!(
                "transfer syntax {}",
                ts.name()
            )))
        }
        Some(_) => {}
    }
    if obj.element(tags::PIXEL_DATA).is_err() {
        return Err(RenderError::Unsupported(
            "the instance has no pixel data".into(),
        ));
    }
    let frames = obj
        .element(tags::NUMBER_OF_FRAMES)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    if frame >= frames {
        return Err(RenderError::NoSuchFrame(frame));
    }
    check_declared_size(&obj, frames)?;

    if let Some(fast) = native_grayscale(&obj, &ts_uid, frame) {
        return Ok(fast);
    }
    let decoded = obj
        .decode_pixel_data_frame(frame)
        .map_err(|e| RenderError::Decode(e.to_string()))?;
    let width = decoded.columns();
    let height = decoded.rows();
    if width == 0 || height == 0 {
        return Err(RenderError::Decode("image has no rows or columns".into()));
    }
    match decoded.samples_per_pixel() {
        1 => grayscale(&decoded, width, height),
        3 => colour(&decoded, width, height).map(DecodedFrame::Color),
        n => Err(RenderError::Unsupported(format!("{n} samples per pixel"))),
    }
}

/// `(lo, value - lo)` per value when all are integers spanning at most
/// 65536 values (see `DecodedFrame::Gray::ints`).
fn int_index(values: &[f32], range: (f32, f32)) -> Option<(i32, Vec<u16>)> {
    let (lo, hi) = range;
    // `x as i32 as f32 == x`: integral (no `fract`, which is a libm call
    // per pixel on baseline x86-64); false for NaN and infinities.
    let integral = |x: f32| x.abs() < 16_777_216.0 && (x as i32) as f32 == x;
    if !integral(lo) || !integral(hi) || hi - lo > 65535.0 {
        return None;
    }
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        if !integral(v) {
            return None;
        }
        out.push((v - lo) as u16);
    }
    Some((lo as i32, out))
}

/// The stored value of one sample (`stored` bits of 1..=16, two's
/// complement when `signed`), as i32.
fn stored_value(stored: u32, signed: bool) -> impl Fn(u32) -> i32 + Copy {
    let stored = stored.clamp(1, 16);
    let mask: u32 = (1u32 << stored) - 1;
    let shift = 32 - stored;
    move |v: u32| {
        let v = v & mask;
        if signed {
            (v << shift) as i32 >> shift
        } else {
            v as i32
        }
    }
}

/// The integer index (`lo`, `hi`, value − `lo` per sample) of the stored
/// values `samples` under an integral rescale, computed without floats:
/// the usual CT/MR case. `None` when the rescaled range exceeds 65536
/// values.
fn int_index_stored<I>(
    samples: I,
    value: impl Fn(u32) -> i32 + Copy,
    slope: i64,
    intercept: i64,
) -> Option<(i32, i32, Vec<u16>)>
where
    I: Iterator<Item = u32> + Clone,
{
    let (xmin, xmax) = samples
        .clone()
        .map(value)
        .fold((i32::MAX, i32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if xmin > xmax {
        return None;
    }
    let (a, b) = (
        i64::from(xmin) * slope + intercept,
        i64::from(xmax) * slope + intercept,
    );
    let (lo, hi) = (a.min(b), a.max(b));
    if hi - lo > 65535 || lo < i64::from(i32::MIN) || hi > i64::from(i32::MAX) {
        return None;
    }
    let out = if slope == 1 {
        // the usual case (CT 1/-1024, MR 1/0): index = stored - min
        samples.map(|v| (value(v) - xmin) as u16).collect()
    } else {
        let offset = intercept - lo;
        samples
            .map(|v| (i64::from(value(v)) * slope + offset) as u16)
            .collect()
    };
    Some((lo as i32, hi as i32, out))
}

/// The values of a frame's stored samples after the (linear) Modality LUT:
/// the integer index when the rescale is integral and the range fits
/// (`Ok`), else one float per sample (`Err`). Generic over the sample
/// source so that each loop is compiled for it.
fn rescaled<I>(
    samples: I,
    value: impl Fn(u32) -> i32 + Copy,
    slope: f64,
    intercept: f64,
) -> Result<(i32, i32, Vec<u16>), Vec<f32>>
where
    I: Iterator<Item = u32> + Clone,
{
    // integral rescale (CT's 1 / -1024, or none): no float per pixel
    if slope.fract() == 0.0
        && intercept.fract() == 0.0
        && slope.abs() <= 65536.0
        && intercept.abs() <= 1e9
    {
        if let Some(index) =
            int_index_stored(samples.clone(), value, slope as i64, intercept as i64)
        {
            return Ok(index);
        }
    }
    let (slope, intercept) = (slope as f32, intercept as f32);
    Err(samples
        .map(|v| value(v) as f32 * slope + intercept)
        .collect())
}

/// A grayscale frame, with the integer index when it applies (then the
/// float values are dropped).
fn gray_frame(
    width: u32,
    height: u32,
    values: Vec<f32>,
    window: Option<(f64, f64)>,
    range: (f32, f32),
    invert: bool,
) -> DecodedFrame {
    let ints = int_index(&values, range);
    DecodedFrame::Gray {
        width,
        height,
        values: if ints.is_some() { Vec::new() } else { values },
        ints,
        window,
        range,
        invert,
    }
}

/// The declared geometry against the data: Rows × Columns × Samples per
/// Pixel within [`MAX_FRAME_SAMPLES`], and for native pixel data Number of
/// Frames × the frame size (checked multiplication) within the bytes
/// stored; for encapsulated pixel data at least one fragment per frame.
fn check_declared_size(
    obj: &dicom_object::DefaultDicomObject,
    frames: u32,
) -> Result<(), RenderError> {
    let rows = uint(obj, tags::ROWS).unwrap_or(0);
    let cols = uint(obj, tags::COLUMNS).unwrap_or(0);
    let spp = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits = uint(obj, tags::BITS_ALLOCATED).unwrap_or(16);
    let unsupported = |what: &str| Err(RenderError::Malformed(what.into()));
    let samples = u64::from(rows)
        .checked_mul(u64::from(cols))
        .and_then(|p| p.checked_mul(u64::from(spp)));
    match samples {
        Some(n) if n > 0 && n <= MAX_FRAME_SAMPLES => {}
        Some(0) => return unsupported("image has no rows or columns"),
        _ => return unsupported("image larger than the server renders"),
    }
    let Ok(pixel) = obj.element(tags::PIXEL_DATA) else {
        return unsupported("the instance has no pixel data");
    };
    if let Some(fragments) = pixel.value().fragments() {
        if frames as usize > fragments.len() {
            return unsupported("Number of Frames exceeds the pixel data");
        }
        return Ok(());
    }
    let stored = pixel
        .value()
        .primitive()
        .map_or(0, |p| p.calculate_byte_len() as u64);
    let need = crate::services::dicomweb::wado::native_frame_len(rows, cols, spp, bits)
        .and_then(|f| f.checked_mul(u64::from(frames)));
    match need {
        Some(need) if need <= stored => Ok(()),
        _ => unsupported("Number of Frames exceeds the pixel data"),
    }
}

fn uint(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element(tag).ok().and_then(|e| e.to_int::<u32>().ok())
}

fn first_f64(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
}

/// Fast path for the common case — uncompressed little-endian
/// MONOCHROME1/2 with 8 or 16 bits allocated, linear rescale, no LUT
/// sequences: read the stored values straight from the pixel bytes.
/// `None` falls back to dicom-pixeldata.
fn native_grayscale(
    obj: &dicom_object::DefaultDicomObject,
    ts: &str,
    frame: u32,
) -> Option<DecodedFrame> {
    if !matches!(ts, "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1") {
        return None;
    }
    if uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) != 1
        || obj.element(tags::MODALITY_LUT_SEQUENCE).is_ok()
        || obj.element(tags::VOILUT_SEQUENCE).is_ok()
    {
        return None;
    }
    let pi = obj
        .element(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()?
        .to_str()
        .ok()?
        .trim()
        .to_owned();
    let invert = match pi.as_str() {
        "MONOCHROME1" => true,
        "MONOCHROME2" => false,
        _ => return None,
    };
    let rows = uint(obj, tags::ROWS)? as usize;
    let cols = uint(obj, tags::COLUMNS)? as usize;
    let allocated = uint(obj, tags::BITS_ALLOCATED)?;
    let stored = uint(obj, tags::BITS_STORED).unwrap_or(allocated);
    let signed = uint(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    if rows == 0
        || cols == 0
        || !(allocated == 8 || allocated == 16)
        || stored == 0
        || stored > allocated
    {
        return None;
    }
    let slope = first_f64(obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = first_f64(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    if !slope.is_finite() || !intercept.is_finite() {
        return None;
    }
    let pixel = obj.element(tags::PIXEL_DATA).ok()?;
    if pixel.value().fragments().is_some() {
        return None;
    }
    let n = rows * cols;
    let bytes_per = (allocated / 8) as usize;
    let first = frame as usize * n;
    // the frame's samples: the 16-bit words as parsed (OW), else the bytes
    let words: Option<&[u16]> = match (bytes_per, pixel.value().primitive()) {
        (2, Some(PrimitiveValue::U16(w))) => Some(w.get(first..first + n)?),
        _ => None,
    };
    let bytes = match words {
        Some(_) => None,
        None => Some(pixel.to_bytes().ok()?),
    };
    let raw: &[u8] = match &bytes {
        Some(b) => b.get(first * bytes_per..(first + n) * bytes_per)?,
        None => &[],
    };
    let le16 = |b: &[u8]| u32::from(u16::from_le_bytes([b[0], b[1]]));
    let window = first_f64(obj, tags::WINDOW_CENTER)
        .zip(first_f64(obj, tags::WINDOW_WIDTH))
        .filter(|(c, w)| c.is_finite() && w.is_finite() && *w >= 1.0);
    // `stored <= allocated <= 16` was checked above
    let value = stored_value(stored, signed);
    let values = match words {
        Some(w) => rescaled(w.iter().map(|&x| u32::from(x)), value, slope, intercept),
        None if bytes_per == 2 => rescaled(raw.chunks_exact(2).map(le16), value, slope, intercept),
        None => rescaled(raw.iter().map(|&b| u32::from(b)), value, slope, intercept),
    };
    let values = match values {
        Ok((lo, hi, idx)) => {
            return Some(DecodedFrame::Gray {
                width: cols as u32,
                height: rows as u32,
                values: Vec::new(),
                ints: Some((lo, idx)),
                window,
                range: (lo as f32, hi as f32),
                invert,
            })
        }
        Err(values) => values,
    };
    let range = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    Some(gray_frame(
        cols as u32,
        rows as u32,
        values,
        window,
        range,
        invert,
    ))
}

fn grayscale(
    px: &DecodedPixelData<'_>,
    width: u32,
    height: u32,
) -> Result<DecodedFrame, RenderError> {
    let pi = px.photometric_interpretation().clone();
    if !pi.is_monochrome() {
        return Err(RenderError::Unsupported(format!(
            "photometric interpretation {pi}"
        )));
    }
    // Modality LUT only; the window is applied below.
    let opts = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Default)
        .with_voi_lut(VoiLutOption::Identity);
    let values: Vec<f32> = px
        .to_vec_frame_with_options(0, &opts)
        .map_err(|e| RenderError::Decode(e.to_string()))?;
    let expected = (width as usize) * (height as usize);
    if values.len() < expected {
        return Err(RenderError::Decode(
            "pixel data is shorter than the image".into(),
        ));
    }
    let mut values = values;
    values.truncate(expected);

    let window = px
        .window()
        .ok()
        .flatten()
        .and_then(|w| w.first().copied())
        .filter(|w| w.width.is_finite() && w.center.is_finite() && w.width >= 1.0)
        .map(|w| (w.center, w.width));
    let range = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    Ok(gray_frame(
        width,
        height,
        values,
        window,
        range,
        pi == PhotometricInterpretation::Monochrome1,
    ))
}

/// The linear VOI LUT function of PS3.3 C.11.2.1.2.1, to 8 bits.
struct LinearWindow {
    low: f64,
    high: f64,
    center: f64,
    width: f64,
}

impl LinearWindow {
    fn new(center: f64, width: f64) -> Self {
        let width = width.max(1.0);
        Self {
            low: center - 0.5 - (width - 1.0) / 2.0,
            high: center - 0.5 + (width - 1.0) / 2.0,
            center,
            width,
        }
    }

    fn apply(&self, x: f64) -> u8 {
        if x.is_nan() || x <= self.low {
            0
        } else if x > self.high || self.width <= 1.0 {
            255
        } else {
            let y = ((x - (self.center - 0.5)) / (self.width - 1.0) + 0.5) * 255.0;
            y.round().clamp(0.0, 255.0) as u8
        }
    }
}

fn colour(px: &DecodedPixelData<'_>, width: u32, height: u32) -> Result<Image8, RenderError> {
    let pi = px.photometric_interpretation().clone();
    let ybr = match pi {
        PhotometricInterpretation::Rgb => false,
        PhotometricInterpretation::YbrFull | PhotometricInterpretation::YbrFull422 => true,
        other => {
            return Err(RenderError::Unsupported(format!(
                "photometric interpretation {other}"
            )))
        }
    };
    let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let values: Vec<f32> = px
        .to_vec_frame_with_options(0, &opts)
        .map_err(|e| RenderError::Decode(e.to_string()))?;
    let expected = (width as usize) * (height as usize) * 3;
    if values.len() < expected {
        return Err(RenderError::Decode(
            "pixel data is shorter than the image".into(),
        ));
    }
    let bits = px.bits_stored().clamp(1, 16);
    let max = f32::from(((1u32 << bits) - 1) as u16);
    let scale = 255.0 / max;
    let mut pixels: Vec<u8> = values[..expected]
        .iter()
        .map(|v| (v * scale).round().clamp(0.0, 255.0) as u8)
        .collect();
    if ybr {
        for p in pixels.chunks_exact_mut(3) {
            let (y, cb, cr) = (
                f32::from(p[0]),
                f32::from(p[1]) - 128.0,
                f32::from(p[2]) - 128.0,
            );
            p[0] = (y + 1.402 * cr).round().clamp(0.0, 255.0) as u8;
            p[1] = (y - 0.344_136 * cb - 0.714_136 * cr)
                .round()
                .clamp(0.0, 255.0) as u8;
            p[2] = (y + 1.772 * cb).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(Image8 {
        width,
        height,
        channels: 3,
        pixels,
    })
}

/// Encode an 8-bit image as PNG with fast compression.
pub fn encode_png(img: &Image8) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::with_capacity(img.pixels.len() / 2 + 1024);
    let mut enc = png::Encoder::new(&mut out, img.width, img.height);
    enc.set_color(if img.channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc
        .write_header()
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    writer
        .write_image_data(&img.pixels)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(out)
}

/// Resize to `w`×`h` (bilinear; box-averaged when shrinking a lot).
pub fn resize(img: &Image8, w: u32, h: u32) -> Image8 {
    if w == img.width && h == img.height || w == 0 || h == 0 || img.width == 0 || img.height == 0 {
        return img.clone();
    }
    let ch = usize::from(img.channels);
    let (sw, sh) = (img.width as usize, img.height as usize);
    let (dw, dh) = (w as usize, h as usize);
    let mut out = vec![0u8; dw * dh * ch];
    let fx = sw as f32 / dw as f32;
    let fy = sh as f32 / dh as f32;
    if fx >= 2.0 || fy >= 2.0 {
        // Area average over the source box of each destination pixel.
        for y in 0..dh {
            let y0 = (y as f32 * fy) as usize;
            let y1 = (((y + 1) as f32 * fy) as usize).clamp(y0 + 1, sh);
            for x in 0..dw {
                let x0 = (x as f32 * fx) as usize;
                let x1 = (((x + 1) as f32 * fx) as usize).clamp(x0 + 1, sw);
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                for c in 0..ch {
                    let mut sum = 0u32;
                    for yy in y0..y1 {
                        let row = &img.pixels[yy * sw * ch..];
                        for xx in x0..x1 {
                            sum += u32::from(row[xx * ch + c]);
                        }
                    }
                    out[(y * dw + x) * ch + c] = ((sum + n / 2) / n.max(1)) as u8;
                }
            }
        }
    } else {
        for y in 0..dh {
            let sy = ((y as f32 + 0.5) * fy - 0.5).clamp(0.0, (sh - 1) as f32);
            let y0 = sy as usize;
            let y1 = (y0 + 1).min(sh - 1);
            let ty = sy - y0 as f32;
            for x in 0..dw {
                let sx = ((x as f32 + 0.5) * fx - 0.5).clamp(0.0, (sw - 1) as f32);
                let x0 = sx as usize;
                let x1 = (x0 + 1).min(sw - 1);
                let tx = sx - x0 as f32;
                for c in 0..ch {
                    let p = |xx: usize, yy: usize| f32::from(img.pixels[(yy * sw + xx) * ch + c]);
                    let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
                    let bot = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
                    out[(y * dw + x) * ch + c] = (top * (1.0 - ty) + bot * ty).round() as u8;
                }
            }
        }
    }
    Image8 {
        width: w,
        height: h,
        channels: img.channels,
        pixels: out,
    }
}

/// Crop to the source rectangle (clamped to the image).
pub fn crop(img: &Image8, x: u32, y: u32, w: u32, h: u32) -> Image8 {
    let x = x.min(img.width);
    let y = y.min(img.height);
    let w = w.min(img.width - x);
    let h = h.min(img.height - y);
    if (x, y, w, h) == (0, 0, img.width, img.height) || w == 0 || h == 0 {
        return img.clone();
    }
    let ch = usize::from(img.channels);
    let mut pixels = Vec::with_capacity(w as usize * h as usize * ch);
    for row in y..y + h {
        let start = (row as usize * img.width as usize + x as usize) * ch;
        pixels.extend_from_slice(&img.pixels[start..start + w as usize * ch]);
    }
    Image8 {
        width: w,
        height: h,
        channels: img.channels,
        pixels,
    }
}

/// Encode as baseline JPEG (`quality` 1..=100) with libjpeg-turbo (SIMD):
/// grayscale as one component, RGB without chroma subsampling (thin
/// coloured annotations stay legible). One compressor per rayon thread.
pub fn encode_jpeg(img: &Image8, quality: u8) -> Result<Vec<u8>, RenderError> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<turbojpeg::Compressor>> =
            const { std::cell::RefCell::new(None) };
    }
    let (format, subsamp) = if img.channels == 3 {
        (turbojpeg::PixelFormat::RGB, turbojpeg::Subsamp::None)
    } else {
        (turbojpeg::PixelFormat::GRAY, turbojpeg::Subsamp::Gray)
    };
    let (width, height) = (img.width as usize, img.height as usize);
    let pitch = width * usize::from(img.channels);
    if width == 0 || height == 0 || img.pixels.len() != pitch * height {
        return Err(RenderError::Encode("buffer size mismatch".into()));
    }
    let enc = |e: turbojpeg::Error| RenderError::Encode(e.to_string());
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(turbojpeg::Compressor::new().map_err(enc)?),
        };
        c.set_quality(i32::from(quality.clamp(1, 100)))
            .map_err(enc)?;
        c.set_subsamp(subsamp).map_err(enc)?;
        let image = turbojpeg::Image {
            pixels: img.pixels.as_slice(),
            width,
            pitch,
            height,
            format,
        };
        c.compress_to_vec(image).map_err(enc)
    })
}

/// Encode as lossless WebP.
pub fn encode_webp(img: &Image8) -> Result<Vec<u8>, RenderError> {
    let expected = img.width as usize * img.height as usize * usize::from(img.channels);
    if img.pixels.len() != expected {
        return Err(RenderError::Encode("buffer size mismatch".into()));
    }
    let mut out = Vec::new();
    let ct = if img.channels == 3 {
        image_webp::ColorType::Rgb8
    } else {
        image_webp::ColorType::L8
    };
    image_webp::WebPEncoder::new(&mut out)
        .encode(&img.pixels, img.width, img.height, ct)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window() {
        let w = LinearWindow::new(40.0, 400.0);
        assert_eq!(w.apply(-1000.0), 0);
        assert_eq!(w.apply(1000.0), 255);
        let mid = w.apply(40.0);
        assert!((126..=129).contains(&mid), "{mid}");
        let w1 = LinearWindow::new(10.0, 1.0);
        assert_eq!(w1.apply(9.0), 0);
        assert_eq!(w1.apply(10.0), 255);
    }

    #[test]
    fn stored_integer_index_matches_float_conversion() {
        // 12 of 16 bits stored, signed and unsigned, CT-like and odd rescales
        let stored_bits = 12u32;
        let words: Vec<u16> = (0..4096u32)
            .map(|i| ((i * 37) % 4096) as u16 | 0xF000)
            .collect();
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        for signed in [false, true] {
            for (slope, intercept) in [(1i64, -1024i64), (2, 0), (-1, 100), (1, 0)] {
                let samples = raw
                    .chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])));
                let value = stored_value(stored_bits, signed);
                let (lo, hi, idx) = int_index_stored(samples, value, slope, intercept).unwrap();
                let floats: Vec<f32> = words
                    .iter()
                    .map(|&w| {
                        let v = u32::from(w) & 0x0FFF;
                        let x = if signed {
                            ((v << 20) as i32 >> 20) as f32
                        } else {
                            v as f32
                        };
                        x * slope as f32 + intercept as f32
                    })
                    .collect();
                let range = floats
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                        (a.min(*v), b.max(*v))
                    });
                assert_eq!(
                    (lo as f32, hi as f32),
                    range,
                    "signed={signed} {slope}/{intercept}"
                );
                let (flo, fidx) = int_index(&floats, range).unwrap();
                assert_eq!((lo, &idx), (flo, &fidx));
            }
        }
        // a rescaled range wider than 65536 values has no index
        let samples = words.iter().map(|&w| u32::from(w));
        assert!(int_index_stored(samples, stored_value(12, false), 100, 0).is_none());
    }

    #[test]
    fn integer_index_matches_float_path() {
        let values: Vec<f32> = (0..256).map(|i| (i * 7 % 300) as f32 - 100.0).collect();
        let range = (-100.0, 199.0);
        let fast = gray_frame(16, 16, values.clone(), Some((40.0, 120.0)), range, true);
        assert!(matches!(&fast, DecodedFrame::Gray { ints: Some(_), .. }));
        let slow = DecodedFrame::Gray {
            width: 16,
            height: 16,
            values,
            ints: None,
            window: Some((40.0, 120.0)),
            range,
            invert: true,
        };
        for w in [
            None,
            Some(Window {
                center: 10.0,
                width: 50.0,
                function: WindowFunction::Sigmoid,
            }),
        ] {
            assert_eq!(fast.to_image8(w).pixels, slow.to_image8(w).pixels);
        }
        assert!(int_index(&[0.5, 1.0], (0.5, 1.0)).is_none());
        assert!(int_index(&[0.0, 70000.0], (0.0, 70000.0)).is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(render_png(b"not dicom at all", 0).is_err());
        assert!(render_png(&[], 0).is_err());
    }
}
