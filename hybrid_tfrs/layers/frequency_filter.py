"""FMLP-Rec's learnable frequency-domain filter (Zhou et al., WWW 2022)."""

from hybrid_tfrs.backend import NO_AUTOCAST, keras, ops, register_serializable


def _complex_multiply(a_real, a_imag, b_real, b_imag):
    return a_real * b_real - a_imag * b_imag, a_real * b_imag + a_imag * b_real


@register_serializable()
class FrequencyFilter(keras.layers.Layer):
    """Learnable complex filter over the sequence axis, computed with ``rfft``.

    The parameter is FMLP-Rec's complex weight ``W`` of shape
    ``(max_len // 2 + 1, d)`` (stored as real and imaginary parts).

    - ``causal=False`` (paper form): ``y = irfft(rfft(x, L) * W, L)``, a circular
      convolution; inputs must have exactly ``max_len`` positions.
    - ``causal=True`` (default): the same filter read as a causal linear
      convolution with kernel ``h = irfft(W, max_len)``:
      ``y = irfft(rfft(x, 2L) * rfft(h, 2L))[:L]`` (the zero padding to 2L
      removes the wrap-around), so position t sees only positions s <= t. At
      the last position of a left-padded window it equals the paper's filter.
      Inputs may be shorter than ``max_len``, not longer (a longer static
      length is refused: the zero padding would no longer cover it).

    Padded positions (``mask == 0``) are zeroed before filtering. The FFTs run
    in float32 on float32 weights whatever the dtype policy (``mixed_float16``
    included); the output has the layer's compute dtype.

    Args:
        max_len: sequence length the filter is defined for.
        causal: linear (causal) or circular (paper) convolution.

    Call args:
        inputs: [B, L, d] float. mask: optional [B, L].

    Returns:
        [B, L, d].

    Example:
    >>> tuple(FrequencyFilter(max_len=10)(keras.random.normal((4, 10, 8))).shape)
    (4, 10, 8)
    """

    def __init__(self, max_len, causal=True, **kwargs):
        super().__init__(**kwargs)
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.max_len = max_len
        self.causal = causal
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        num_freqs = self.max_len // 2 + 1
        self.weight_real, self.weight_imag = (
            self.add_weight(
                name=name,
                shape=(num_freqs, hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                trainable=True,
                **NO_AUTOCAST,
            )
            for name in ("weight_real", "weight_imag")
        )
        super().build(input_shape)

    def _weights(self):
        """W's real and imaginary parts in float32: [d, F] each."""
        return tuple(
            ops.transpose(ops.cast(weight, "float32"))
            for weight in (self.weight_real, self.weight_imag)
        )

    def kernel(self):
        """The causal kernel ``h = irfft(W, max_len)``: [max_len, d] float32."""
        return ops.transpose(ops.irfft(self._weights(), fft_length=self.max_len))

    def call(self, inputs, mask=None):
        if mask is not None:
            inputs = inputs * ops.cast(mask, inputs.dtype)[:, :, None]
        x = ops.transpose(ops.cast(inputs, "float32"), (0, 2, 1))  # [B, d, L]: FFT on the last axis
        length = ops.shape(x)[-1]
        if self.causal:
            if isinstance(length, int) and length > self.max_len:
                raise ValueError(
                    f"FrequencyFilter: inputs of {length} positions, more than max_len="
                    f"{self.max_len} (the filter's length); keep the latest max_len"
                )
            h = ops.transpose(self.kernel())  # [d, max_len]
            fft_length = 2 * self.max_len
            if isinstance(length, int) and length < self.max_len:
                # y[t] reads taps 0..t only: a shorter (bucketed) input needs its
                # first `length` taps and an FFT of 2 * length, still free of wrap-around.
                h = h[:, :length]
                fft_length = 2 * length
            h_real, h_imag = ops.rfft(h, fft_length=fft_length)
            x_real, x_imag = ops.rfft(x, fft_length=fft_length)
            y = ops.irfft(_complex_multiply(x_real, x_imag, h_real, h_imag), fft_length=fft_length)
            y = y[:, :, :length]
        else:
            if isinstance(length, int) and length != self.max_len:
                raise ValueError(
                    f"the circular (causal=False) filter needs inputs of exactly max_len="
                    f"{self.max_len} positions, got {length}"
                )
            x_real, x_imag = ops.rfft(x, fft_length=self.max_len)
            y = ops.irfft(
                _complex_multiply(x_real, x_imag, *self._weights()), fft_length=self.max_len
            )
        return ops.cast(ops.transpose(y, (0, 2, 1)), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(max_len=self.max_len, causal=self.causal)
        return config
