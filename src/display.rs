//! What the examples print for a person: an input image drawn in the terminal and the model's
//! most likely classes.

/// Grey levels from blank to full, one character per level.
const RAMP: [char; 5] = [' ', '░', '▒', '▓', '█'];

/// Draws a grey image (row-major, values in [0, 1], 1 = ink) with shade characters inside a frame.
/// Each pixel is two characters wide because terminal cells are about twice as tall as wide, so a
/// 28×28 MNIST digit comes out square (28 lines of 56 columns). Values outside [0, 1] (e.g.
/// standardised features) are rescaled by the image's own min and max; NaN draws as blank, and a
/// missing pixel (slice shorter than `width * height`) as blank too.
pub fn render_image(pixels: &[f32], width: usize, height: usize) -> String {
    let finite = pixels.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((0.0f32, 1.0f32), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut out = String::with_capacity((2 * width + 3) * (height + 2) * 3);
    out.push('┌');
    out.extend(std::iter::repeat_n('─', 2 * width));
    out.push_str("┐\n");
    for y in 0..height {
        out.push('│');
        for x in 0..width {
            let v = pixels.get(y * width + x).copied().unwrap_or(lo);
            let t = if v.is_finite() { ((v - lo) / span).clamp(0.0, 1.0) } else { 0.0 };
            let level = (t * (RAMP.len() - 1) as f32).round() as usize;
            let c = RAMP[level.min(RAMP.len() - 1)];
            out.push(c);
            out.push(c);
        }
        out.push_str("│\n");
    }
    out.push('└');
    out.extend(std::iter::repeat_n('─', 2 * width));
    out.push('┘');
    out
}

/// The `k` most likely classes as (class, probability), most likely first; ties keep the lower
/// class first and NaN ranks last.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| {
        let key = |p: f32| if p.is_nan() { f32::NEG_INFINITY } else { p };
        key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0))
    });
    ranked.truncate(k);
    ranked
}

/// The `k` most likely classes as text, e.g. `7: 99.1%  3: 0.5%  2: 0.2%`.
pub fn format_top_k(probs: &[f32], k: usize) -> String {
    top_k(probs, k).iter().map(|(class, p)| format!("{class}: {:.1}%", p * 100.0)).collect::<Vec<_>>().join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_formats() {
        let p = [0.002, 0.0, 0.002, 0.005, 0.0, 0.0, 0.0, 0.991, f32::NAN, 0.0];
        assert_eq!(top_k(&p, 3), vec![(7, 0.991), (3, 0.005), (0, 0.002)]);
        assert_eq!(format_top_k(&p, 3), "7: 99.1%  3: 0.5%  0: 0.2%");
        assert_eq!(top_k(&p, 20).len(), 10);
        assert_eq!(top_k(&p, 20)[9].0, 8);
    }

    #[test]
    fn render_draws_a_frame_and_shades() {
        let img = render_image(&[0.0, 1.0, 0.5, f32::NAN], 2, 2);
        let lines: Vec<&str> = img.lines().collect();
        assert_eq!(lines, ["┌────┐", "│  ██│", "│▒▒  │", "└────┘"]);
        // A short slice must not panic.
        assert_eq!(render_image(&[1.0], 2, 1).lines().nth(1), Some("│██  │"));
    }
}
