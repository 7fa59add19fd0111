"""scikit-learn-style estimators: ``fit``, ``predict``, ``score``, ``save``, ``load``.

=========================  ====================  ======================================
estimator                  y                     score
=========================  ====================  ======================================
``SequenceRegressor``      ``(N,)`` or ``(N, k)``  R^2 (averaged over outputs)
``SequenceClassifier``     N labels (str / int)  accuracy
``SequenceTagger``         N tag lists           token accuracy
``CharLanguageModel``      none (a text is X)    log-likelihood per character, in nats
``SequenceTranslator``     N translations (str)  corpus BLEU (sacreBLEU), 0-100
=========================  ====================  ======================================

X for the first three is a 3-D array ``(N, L, C)``, a list of arrays ``(L_i,
C)`` of different lengths, or a list of token lists (text; the estimator
builds a vocabulary with ``<pad>`` and ``<unk>`` and learns an embedding);
see :mod:`rnnkit.toolkit.estimators.inputs`. Each is a recurrent encoder
(:class:`rnnkit.RNN`, LSTM or GRU) and a head (:mod:`rnnkit.toolkit.models`),
trained by the :class:`~rnnkit.toolkit.trainer.Trainer` on packed batches.

Hyper-parameters are keyword arguments of the constructor, which only stores
them (``get_params`` / ``set_params`` as in scikit-learn); fit checks them and
names a bad one. The shared ones, with their defaults:

- architecture: ``cell="rnn"`` (or ``"lstm"``, ``"gru"``; ``nonlinearity`` is the
  "rnn" cell's only), ``hidden_size=64``, ``num_layers=1``, ``nonlinearity="tanh"``,
  ``dropout=0.0`` (between layers), ``embedding_dim=None`` (token input:
  hidden_size), ``min_freq=1`` (rarer tokens read as ``<unk>``),
  ``seq_length=64`` (language model: characters per training piece);
- training: ``batch_size=32``, ``weight_decay=0.01`` (AdamW), ``grad_clip=1.0``,
  ``seed=0``, ``device="auto"`` (a GPU if there is one), ``verbose=None`` (a
  progress bar when stderr is a terminal).

The tagger and the language model train ``epochs=10`` passes at ``lr=1e-3`` on a
unidirectional encoder unless told otherwise. The regressor and the classifier
derive their settings from the data (:mod:`rnnkit.toolkit.estimators.settings`):
``bidirectional=True``, ``pooling="mean"``, ``lr=3e-3``, and ``"auto"`` for
``scaling``, ``patch_size``, ``max_steps``, ``validation_fraction`` and
``early_stopping_patience``; ``fitted_settings_`` shows what they became.

Example:
    >>> from rnnkit import SequenceClassifier
    >>> model = SequenceClassifier(seed=0).fit(X_train, y_train)
    >>> model.fitted_settings_  # what fit derived from X_train
    >>> model.score(X_test, y_test)  # accuracy
    >>> model.save("models/sentiment")
    >>> SequenceClassifier.load("models/sentiment").predict(X_test)
"""

from rnnkit.toolkit.estimators.base import Estimator, NotFittedError
from rnnkit.toolkit.estimators.classifier import SequenceClassifier
from rnnkit.toolkit.estimators.language_model import CharLanguageModel
from rnnkit.toolkit.estimators.regressor import SequenceRegressor
from rnnkit.toolkit.estimators.tagger import SequenceTagger
from rnnkit.toolkit.estimators.translator import SequenceTranslator

__all__ = [
    "CharLanguageModel",
    "Estimator",
    "NotFittedError",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTagger",
    "SequenceTranslator",
]
