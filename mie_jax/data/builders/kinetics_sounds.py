"""Kinetics-Sounds (Arandjelovic and Zisserman, 2017): audio + video frames of Kinetics actions that sound, 31 classes.

Kinetics-Sounds is a subset of Kinetics-400 (YouTube clips of about 10 s);
the audio-visual peers (OGM-GE, PMR) use 31 of its classes but publish no
common file layout, so this one is ours: ``train.csv`` and ``test.csv`` start
with the header ``youtube_id,label`` and list one clip per row, its label the
Kinetics class name (e.g. ``playing bagpipes``); ``audio/<youtube_id>.wav`` is
the clip's audio and ``visual/<youtube_id>/*.jpg`` its extracted frames.

The peers' loaders differ in their audio input too (sample rate, clip
length, STFT, or precomputed arrays they do not publish). Ours is CREMA-D's
transform on the whole clip: 10 s at 16 kHz, n_fft 512, hop 353, i.e. 257 x 454.
"""

from mie_jax.data.builders.audiovisual import AudioVisualBuilder, Spectrogram

# Sorted, so that class indices do not depend on which peer's list order one follows.
CLASSES = (
    "blowing nose", "bowling", "chopping wood", "dribbling basketball", "laughing", "mowing lawn",
    "playing accordion", "playing bagpipes", "playing bass guitar", "playing cello", "playing clarinet",
    "playing drums", "playing guitar", "playing harmonica", "playing harp", "playing keyboard", "playing organ",
    "playing piano", "playing saxophone", "playing trombone", "playing trumpet", "playing violin",
    "playing xylophone", "ripping paper", "shoveling snow", "shuffling cards", "singing", "tap dancing",
    "tapping guitar", "tapping pen", "tickling",
)
# Our choice (see the module docstring): the whole 10 s clip at 16 kHz.
SPECTROGRAM = Spectrogram(sample_rate=16000, seconds=10.0, n_fft=512, hop=353)


class KineticsSounds(AudioVisualBuilder):
    """Kinetics-Sounds' clips: a log-spectrogram and frames, one of 31 sounding actions."""

    LAYOUT = ("{train,test}.csv with the header 'youtube_id,label' and one 'youtube_id,class name' row per clip; "
              "audio/<youtube_id>.wav; visual/<youtube_id>/*.jpg")
    HOMEPAGE = "https://github.com/cvdfoundation/kinetics-dataset"
    DESCRIPTION = "Kinetics-400 clips of 31 actions that can be both seen and heard (Arandjelovic and Zisserman, 2017)."
    CITATION = "Arandjelovic and Zisserman. Look, Listen and Learn. ICCV 2017."
    SPLITS = ("train", "test")
    DEFAULT_NUM_FRAMES = 3  # The peers feed three frames per Kinetics-Sounds clip.
    CLASSES = CLASSES
    SPECTROGRAM = SPECTROGRAM
    AUDIO_DIR = "audio"
    FRAMES_DIR = "visual"
    CSV_HEADER = ("youtube_id", "label")
