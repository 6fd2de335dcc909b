"""Decoding and converting uploaded audio, with libsndfile (soundfile) and soxr.

FreeSWITCH plays a file without resampling when its rate is the call's (8 kHz for G.711, 16 kHz for
wideband codecs); anything else is resampled on every playback, and MP3 needs mod_shout, which the
box may not have. So every upload is converted once: mono, 16-bit PCM WAV, at 16 kHz when the source
has at least that much bandwidth, else 8 kHz.

The work is streamed in blocks (bounded memory whatever the upload), and is meant to run in a thread
(`convert` blocks): callers run it in gevent's threadpool so the event loop keeps serving.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

# libsndfile's container names we accept: WAV and MP3 above all, and the other common lossless/open ones.
ACCEPTED_FORMATS = {"WAV": "wav", "WAVEX": "wav", "MP3": "mp3", "FLAC": "flac", "OGG": "ogg", "AIFF": "aiff"}
WIDEBAND = 16000
NARROWBAND = 8000
_BLOCK = 32768  # source frames per block


class AudioError(ValueError):
    """The upload is not audio we accept (the message says why, for the client)."""


@dataclass(frozen=True)
class Converted:
    rate: int
    frames: int
    source_format: str
    source_rate: int
    source_channels: int

    @property
    def duration_ms(self) -> int:
        return int(self.frames * 1000 / self.rate) if self.rate else 0


def target_rate(source_rate: int) -> int:
    """16 kHz when the source carries wideband audio, else 8 kHz (never upsampled beyond what it has)."""
    return WIDEBAND if source_rate >= WIDEBAND else NARROWBAND


def convert(source: BinaryIO, destination: str, max_seconds: int) -> Converted:
    """Decode `source` and write it to `destination` as mono 16-bit WAV at `target_rate`.

    Raises AudioError when `source` is not audio libsndfile can decode, is in a format we do not accept,
    is empty, or lasts more than `max_seconds`; `destination` may then hold a partial file (the caller
    writes to a temporary name and removes it).
    """
    try:
        reader = soundfile.SoundFile(source)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError("not an audio file we can read (WAV or MP3; also FLAC, Ogg Vorbis, AIFF)") from exc
    with reader:
        kind = ACCEPTED_FORMATS.get(reader.format)
        if kind is None:
            raise AudioError(f"audio format {reader.format} is not accepted (WAV or MP3; also FLAC, Ogg, AIFF)")
        rate, channels = int(reader.samplerate), int(reader.channels)
        if rate < 4000 or rate > 384000 or not 1 <= channels <= 32:
            raise AudioError(f"unusable audio: {rate} Hz, {channels} channels")
        limit = max_seconds * rate
        if reader.frames > limit:
            raise AudioError(f"too long: {reader.frames / rate:.0f} s (at most {max_seconds} s)")
        out_rate = target_rate(rate)
        stream = soxr.ResampleStream(rate, out_rate, 1, dtype="float32", quality="HQ")
        read = written = 0
        with soundfile.SoundFile(destination, "w", out_rate, 1, "PCM_16", format="WAV") as out:
            try:
                for block in reader.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                    read += len(block)
                    if read > limit:
                        raise AudioError(f"too long: more than {max_seconds} s")
                    mono = block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0]
                    written += _write(out, stream.resample_chunk(np.ascontiguousarray(mono)))
            except soundfile.LibsndfileError as exc:
                raise AudioError("the audio data is damaged and cannot be decoded") from exc
            written += _write(out, stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        if read == 0 or written == 0:
            raise AudioError("the file holds no audio")
    return Converted(out_rate, written, kind, rate, channels)


def _write(out: soundfile.SoundFile, samples: np.ndarray) -> int:
    if len(samples):
        out.write(np.clip(samples, -1.0, 1.0))
    return len(samples)
