"""``python -m rnn_sentiment`` runs the command line."""

from rnn_sentiment.cli import main

main()
