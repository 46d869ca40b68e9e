"""Classification and regression targets: features, pooling and objectives (`objective`), evaluation
and the epoch chosen on a hold-out (`evaluation`), one seed's run (`target`), and what is reported
over seeds (`summary`)."""
