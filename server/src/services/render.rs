//! Rendering one frame of a stored instance as an 8-bit PNG.
//!
//! Pipeline (PS3.4 Grayscale Standard Display Function chain, simplified):
//! decode with dicom-pixeldata → Modality LUT (rescale slope/intercept) →
//! linear VOI window from the file's first Window Center/Width, else the
//! frame's min/max → MONOCHROME1 inverted → 8-bit grayscale PNG. Colour
//! images (RGB, or YBR_FULL converted to RGB) are scaled to 8 bits and
//! passed through. Everything here is synchronous and CPU-bound: call it
//! through [`crate::services::cpu::run`].

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
    #[error("pixel data could not be decoded: {0}")]
    Decode(String),
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// An 8-bit image ready for encoding.
#[derive(Debug)]
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
        3 => colour(&decoded, width, height),
        n => Err(RenderError::Unsupported(format!("{n} samples per pixel"))),
    }
}

fn grayscale(px: &DecodedPixelData<'_>, width: u32, height: u32) -> Result<Image8, RenderError> {
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
    let values = &values[..expected];

    let window = px
        .window()
        .ok()
        .flatten()
        .and_then(|w| w.first().copied())
        .filter(|w| w.width.is_finite() && w.center.is_finite() && w.width >= 1.0)
        .map(|w| (w.center, w.width));
    let (center, width_w) = match window {
        Some(w) => w,
        None => {
            let (min, max) = values
                .iter()
                .filter(|v| v.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(*v), hi.max(*v))
                });
            if min > max {
                (0.0, 1.0)
            } else {
                let (min, max) = (f64::from(min), f64::from(max));
                ((min + max) / 2.0 + 0.5, (max - min + 1.0).max(1.0))
            }
        }
    };
    let invert = pi == PhotometricInterpretation::Monochrome1;
    let lut = LinearWindow::new(center, width_w);
    let pixels = values
        .iter()
        .map(|v| {
            let y = lut.apply(f64::from(*v));
            if invert {
                255 - y
            } else {
                y
            }
        })
        .collect();
    Ok(Image8 {
        width,
        height,
        channels: 1,
        pixels,
    })
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(render_png(b"not dicom at all", 0).is_err());
        assert!(render_png(&[], 0).is_err());
    }
}
