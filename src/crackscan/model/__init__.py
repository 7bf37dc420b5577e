"""Models: what a model file carries (its task, classes, sizes), the classifier on the frozen
backbone, heads, Keras archive editing, the built-in models and the registry that resolves
a name or path."""
