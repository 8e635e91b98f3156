"""File-level steps and their composition: what the command line runs.

    recon_step.recon_file     twix + trajectory file -> image NIfTI + sidecar (+ PNG)
    b1_step.b1map_file        double-angle pair -> B1 map
    tsc_step.quantify_file    image + vials (+ B1, labels) -> TSC map, SD, ROI tables, figures
    run.process_scan          one scan end to end (+ HTML report)
    batch.run_batch           a manifest on a process pool or a Dask cluster, resumable
    config                    run configs and manifests -> Job + RunOptions

Each step: check options and paths -> read into the core types -> call the stage -> write
atomically with a sidecar. The stages (io, traj, recon, quant, report) never import this package.
"""
