from setuptools import find_packages, setup

setup(
    name='basicsr-unlearn',
    version='0.1.0',
    description='Accurate forgetting and ASVP anti-distillation for all-in-one restoration models in BasicSR',
    packages=find_packages(include=['basicsr_unlearn', 'basicsr_unlearn.*']),
    python_requires='>=3.9,<3.13',
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.0',
        'torchvision',
        'mmengine>=0.10',
        'opencv-python',
        'lmdb',
        'scikit-image',
        'tqdm',
        'matplotlib',
        'pyyaml',
    ],
    extras_require={'test': ['pytest', 'pytest-timeout', 'ruff']},
)
