"""Part A's pretrained models behind one interface (base.Backbone): the MNIST class-conditioned DDPM and
DeepFloyd IF; the prompts a run embeds and their embedding table."""
