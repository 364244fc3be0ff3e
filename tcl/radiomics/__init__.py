"""The radiomics reference: features as the IBSI defines them (``ibsi``, checked against its
digital phantom) and the logistic-regression reference built on them (``reference``)."""
