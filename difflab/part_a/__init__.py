"""Part A: sampling loops written once against a Backbone, views for illusions, inputs, the illusion judge, and
the deliverables by course section."""
