"""The shared core every phase builds on, at the bottom of the import order (it imports no phase).

The typed params schema (:mod:`.params`), dataset layouts by name and image/mask decoding (:mod:`.presets`,
:mod:`.datasets`, the synthetic demo set :mod:`.demo`), crash-safe writes and per-image tables (:mod:`.files`),
what every stage shares: validated params, one-line errors, output ownership, resumable work units, torchrun
groups, timings (:mod:`.runner`, :mod:`.errors`, :mod:`.timing`); and what more than one phase uses: feature
normalisation (:mod:`.arrays`, paper Eq. 5), patch-grid maps to full-size PNGs (:mod:`.maps`), a mask drawn on its
image for people to look at (:mod:`.overlay`) and the saliency metrics that score both the pseudo-masks and the
final maps (:mod:`.metrics`)."""
