"""Phase 3, the head (stages ``train``, ``self_train``, ``export``, the head's maps of ``predict``, and
``segment``): the lightweight patch head and its inference (:mod:`.model`, paper Sec. 3.3 Eq. 9), its losses
(:mod:`.losses`, Eq. 10-13), training and self-training rounds (:mod:`.train`), the trained model as a Hugging
Face model directory (:mod:`.segmenter`), the authors' released head read as this project's
(:mod:`.release`), object masks as COCO JSON (:mod:`.coco`), the bilateral solver that may refine a map
(:mod:`.postprocess`), video files in and out (:mod:`.video`) and the inputs of a corpus (:mod:`.corpus`). Imports the core and the features phase."""
