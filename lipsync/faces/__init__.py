"""Finding the face in every frame, and the box the model sees.

    detection.py          what a detector is: FaceDetector (stateless) and FaceTracker (per-clip state), Detection,
                          and ClipDetection, which drives either through a clip
    detectors.py          the stateless detectors (S3FD, Haar) and the factory that picks one for a job
    s3fd.py               S3FD, the detector Wav2Lip was trained with (network and batch detection, on torch)
    blazeface.py          MediaPipe's BlazeFace on OpenVINO, from the bundled TFLite models
    blazeface_decoding.py BlazeFace's anchors, boxes and weighted NMS, as MediaPipe decodes them
    blazeface_tracker.py  following one face through a clip with BlazeFace (the CPU tracker)
    boxmap.py             where S3FD would put a cheaper detector's box
    crops.py              detections in, padded and smoothed crops out, frame by frame
    cache.py              detections cached by the file's content and the settings
    preview.py            the first frame with its boxes (the page's preview), and the scan through a clip
    timeline.py           the face timeline image
"""
