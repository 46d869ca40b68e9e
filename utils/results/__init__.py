"""What runs report and the analyses read: metrics (`metrics`), the results table (`table`),
statistics over seeds (`seed_statistics`) and the comparison of several runs (`comparison`)."""
