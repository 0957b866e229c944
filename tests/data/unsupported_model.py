"""A model using an op arasc does not lower (an LSTM), for the frontend's error test."""
import torch


class Recurrent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        y = self.proj(x)
        return torch.fft.fft(y).real  # the unsupported line


def factory():
    return Recurrent().eval(), (torch.randn(2, 8),)
