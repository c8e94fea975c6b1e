"""The diffusion model: the noise process (`schedule`), the denoiser (`unet`) and the samplers (`sampler`).

The denoiser knows nothing about noise; the schedule takes the network as an argument; the sampler
chains the two.
"""
