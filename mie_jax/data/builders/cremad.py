"""CREMA-D (Cao et al., 2014): audio + one video frame of actors speaking with an emotion, 6 classes.

The clips are CREMA-D's own (https://github.com/CheyneyComputerScience/CREMA-D);
the splits and the layout are those of the audio-visual peers (OGM-GE, PMR):
``train.csv`` and ``test.csv`` list one ``clip_name,LABEL`` row per clip and
no header (e.g. ``1001_DFA_ANG_XX,ANG``; OGM-GE's ``data/CREMAD/``),
``AudioWAV/<clip_name>.wav`` is CREMA-D's audio and
``Image-01-FPS/<clip_name>/*.jpg`` the frames extracted at 1 fps (OGM-GE's
``video2frame-1fps.py``). Splits: 6698 / 744.
"""

from mie_jax.data.builders.audiovisual import AudioVisualBuilder, Spectrogram

# OGM-GE's class order (its class_dict), so that class indices match the peers'.
CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
# OGM-GE's audio input: 3 s at 22050 Hz, n_fft 512, hop 353, i.e. 257 x 188.
SPECTROGRAM = Spectrogram(sample_rate=22050, seconds=3.0, n_fft=512, hop=353)


class CremaD(AudioVisualBuilder):
    """CREMA-D's clips as the audio-visual peers use them: a log-spectrogram and frames, one of 6 emotions."""

    name = "cremad"  # The dataset's name in builders, not TFDS's "crema_d" from the class name.
    LAYOUT = (
        "{train,test}.csv with one 'clip_name,LABEL' row per clip and no header; AudioWAV/<clip_name>.wav; "
        "Image-01-FPS/<clip_name>/*.jpg"
    )
    HOMEPAGE = "https://github.com/CheyneyComputerScience/CREMA-D"
    DESCRIPTION = "Actors saying sentences with one of six emotions, audio and video (Cao et al., 2014)."
    CITATION = (
        "Cao, Cooper, Keutmann, Gur, Nenkova and Verma. CREMA-D: Crowd-sourced Emotional Multimodal "
        "Actors Dataset. IEEE Transactions on Affective Computing, 2014."
    )
    SPLITS = ("train", "test")
    DEFAULT_NUM_FRAMES = 1  # OGM-GE feeds one frame per CREMA-D clip.
    CLASSES = CLASSES
    SPECTROGRAM = SPECTROGRAM
    AUDIO_DIR = "AudioWAV"
    FRAMES_DIR = "Image-01-FPS"
    CSV_HEADER = None
