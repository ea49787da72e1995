"""Files in and out: user images, image files with their records, prompt files, output names, writes."""
