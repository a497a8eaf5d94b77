"""Images: packer-style templates baked by diskimage-builder into qcow2 and raw images.

`kiln image validate|build|test|boot|push|pull|export-ec2`; see images/README.md.
"""
