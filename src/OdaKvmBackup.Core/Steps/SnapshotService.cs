namespace OdaKvmBackup.Core.Steps;

internal sealed record SnapshotRequest(
    string DomainName, IReadOnlyList<VmDisk> Disks, string SnapshotName, string? OverlayDirectory,
    bool CrashConsistent, IReadOnlyList<IPreflightCheck> DownstreamChecks);

/// <summary>Steps 2 and 4: one atomic, disk-only, external snapshot per domain, then its metadata deleted.</summary>
internal sealed class SnapshotService
{
    private readonly HostTools _tools;

    public SnapshotService(HostTools tools) => _tools = tools;

    private VirshClient Virsh => _tools.Virsh;

    /// <summary>Preflight: reads only, changes nothing. Every problem found is in <see cref="SnapshotPlan.Problems"/>.</summary>
    public async Task<SnapshotPlan> PlanAsync(SnapshotRequest request, CancellationToken ct)
    {
        var domain = request.DomainName;
        // Asked together: each virsh call costs mostly its own start-up, and the VM waits for none of this.
        var stateCall = Virsh.GetStateAsync(domain, ct);
        var liveCall = Virsh.DumpXmlAsync(domain, inactive: false, ct);
        var inactiveCall = Virsh.DumpXmlAsync(domain, inactive: true, ct);
        await Task.WhenAll(stateCall, liveCall, inactiveCall).ConfigureAwait(false);
        var state = stateCall.Result;
        var live = DomainXml.Parse(liveCall.Result, state);
        var inactiveXml = inactiveCall.Result;
        var cold = state is "shut off" or "crashed";
        var problems = new List<BackupException>();

        var piped = new List<VmDisk>();
        foreach (var disk in request.Disks)
        {
            var current = live.Disks.FirstOrDefault(d => d.Target == disk.Target);
            if (current is null || current.Source != disk.Source)
            {
                problems.Add(Problem(ErrorIds.DiskChanged, BackupErrorCategory.InvalidOperation, domain,
                    $"Disk {disk.Target} of '{domain}' is no longer '{disk.Source}' (it is now '{current?.Source ?? "gone"}').",
                    $"List the disks again: Get-VmDisk {domain} | New-KvmDiskSnapshot ..."));
                continue;
            }
            piped.Add(current);
        }
        var setFiles = BackupNames.SetFileNames(piped.Select(d => (d.Target, d.Source ?? "")));
        var overlayPaths = BackupNames.OverlayPaths(domain, piped.Select(d => (d.Target, d.Source ?? "")), request.SnapshotName, request.OverlayDirectory);
        var overlays = piped.ToDictionary(d => d.Target, d => cold ? null : overlayPaths[d.Target]);
        var retained = BackupNames.RetainedNames(overlays.Where(o => o.Value is not null).Select(o => (o.Key, o.Value!)));
        var disks = piped.Select(d => new DiskRecord
        {
            Target = d.Target,
            Source = d.Source ?? "",
            Format = d.Format,
            Overlay = overlays[d.Target],
            SetFile = setFiles[d.Target],
            RetainedName = retained.GetValueOrDefault(d.Target),
        }).ToList();
        var excluded = live.Disks.Where(d => piped.All(p => p.Target != d.Target))
            .Select(d => new ExcludedDisk(d.Target, d.Source, d.ReadOnly ? "read-only" : d.Source is null ? "no source" : "not piped to New-KvmDiskSnapshot"))
            .ToList();

        var runId = BackupNames.RunId(DateTime.UtcNow);
        foreach (var check in request.DownstreamChecks)
        {
            if (await check.IsRunIdTakenAsync(domain, runId, ct).ConfigureAwait(false))
            {
                // A run of this domain finished within this second: take the next second rather than collide. The
                // timer may fire a little before the clock turns: wait until it has.
                var taken = runId;
                while (runId == taken)
                {
                    await Task.Delay(1000 - DateTime.UtcNow.Millisecond, ct).ConfigureAwait(false);
                    runId = BackupNames.RunId(DateTime.UtcNow);
                }
                break;
            }
        }

        var context = new PreflightContext(_tools.QemuImg) { DomainName = domain, RunId = runId, Cold = cold, Live = live, Disks = disks };
        context.Problems.AddRange(problems);
        foreach (var disk in piped)
            CheckDiskKind(disk, request, cold, context);
        var stale = CheckJournalAndLock(domain, context);
        if (!cold)
        {
            CheckOverlays(disks, live, context);
            // The host's answers are asked for all at once; the problems are then listed in a fixed order.
            var agent = request.CrashConsistent ? Task.CompletedTask : Virsh.PingGuestAgentAsync(domain, ct);
            var images = Task.WhenAll(disks.Where(d => Directory.Exists(Path.GetDirectoryName(d.Overlay!)))
                .Select(d => context.ImageInfoAsync(d.Source, ct)));
            await CheckLeftoversAsync(request.SnapshotName, live, context, ct).ConfigureAwait(false);
            await images.ConfigureAwait(false);
            await CheckOverlaySpaceAsync(disks, context, ct).ConfigureAwait(false);
            await CheckGuestAgentAsync(agent, live, context).ConfigureAwait(false);
        }
        foreach (var check in request.DownstreamChecks)
            await check.CheckAsync(context, ct).ConfigureAwait(false);
        foreach (var disk in disks)
            disk.VirtualSizeBytes = context.KnownImageInfo(disk.Source)?.VirtualSize;

        return new SnapshotPlan
        {
            Request = request,
            Run = new RunRecord
            {
                DomainName = domain,
                RunId = runId,
                SnapshotName = request.SnapshotName,
                Consistency = cold ? BackupConsistency.Cold : request.CrashConsistent ? BackupConsistency.CrashConsistent : BackupConsistency.Quiesced,
                DomainXml = inactiveXml,
                Disks = disks,
                ExcludedDisks = excluded,
            },
            Cold = cold,
            ExcludedTargets = excluded.Where(d => d.Source is not null && d.Reason != "read-only").Select(d => d.Target).ToList(),
            ClosesStaleJournal = stale,
            Problems = context.Problems,
            Warnings = context.Warnings,
        };
    }

    /// <summary>Starts the run the plan describes: takes the domain's lock and writes the journal. The caller has
    /// checked that the plan has no problems, and keeps the run so that it can give it up if anything fails.</summary>
    public static BackupRun Begin(SnapshotPlan plan, HostTools tools)
    {
        if (plan.ClosesStaleJournal)
            RunJournal.Delete(plan.DomainName);
        return BackupRun.Begin(plan.Run, tools);
    }

    /// <summary>
    /// Takes the snapshot. The virsh call is never cut short (libvirtd finishes a snapshot whatever happens to its
    /// client, so stopping virsh would only hide the outcome); only its time limit ends it. A stop asked for
    /// meanwhile is honoured once the outcome is known, so the caller's rollback knows what to undo.
    /// </summary>
    public async Task SnapshotAsync(BackupRun run, SnapshotPlan plan, CancellationToken ct)
    {
        if (plan.Cold)
            return;
        var domain = plan.DomainName;
        var request = plan.Request;
        run.RecordSnapshotStarting();
        var specs = plan.Disks.Select(d => new DiskSpec(d.Target, d.Overlay!)).ToList();
        try
        {
            await Virsh.CreateDiskSnapshotAsync(domain, request.SnapshotName, !request.CrashConsistent, specs, plan.ExcludedTargets, CancellationToken.None).ConfigureAwait(false);
        }
        catch (VirshException ex) when (ex.Failure == VirshFailure.Unreachable)
        {
            // libvirtd went away during the call: the snapshot may or may not exist. Look before deciding.
            if (!await AllOnOverlaysAsync(domain, plan.Disks, CancellationToken.None).ConfigureAwait(false))
                throw;
        }
        catch (BackupException ex) when (ex.ErrorId == ErrorIds.CommandTimedOut)
        {
            run.RecordSnapshotOutcomeUnknown();
            throw;
        }
        run.RecordSnapshotTaken(DateTime.UtcNow);
        try
        {
            await Virsh.DeleteSnapshotMetadataAsync(domain, request.SnapshotName, CancellationToken.None).ConfigureAwait(false);
        }
        catch (BackupException ex)
        {
            throw new BackupException(ErrorIds.SnapshotFailed, BackupErrorCategory.InvalidResult,
                $"The snapshot of '{domain}' was taken but its metadata could not be deleted: {ex.Message}",
                $"'{domain}' is put back on its own disks; if that fails, run Repair-KvmBackup -DomainName {domain}.", domain, ex);
        }
        if (!await AllOnOverlaysAsync(domain, plan.Disks, CancellationToken.None).ConfigureAwait(false))
        {
            throw new BackupException(ErrorIds.SnapshotFailed, BackupErrorCategory.InvalidResult,
                $"virsh reported the snapshot of '{domain}' as created, but its disks do not write to the planned overlays.",
                $"Check 'virsh domblklist {domain} --details'; run Repair-KvmBackup -DomainName {domain}.", domain);
        }
        ct.ThrowIfCancellationRequested();
    }

    private async Task<bool> AllOnOverlaysAsync(string domain, IReadOnlyList<DiskRecord> disks, CancellationToken ct)
    {
        var live = await Virsh.DescribeAsync(domain, ct).ConfigureAwait(false);
        return disks.All(d => live.Disks.Any(l => l.Target == d.Target && l.Source == d.Overlay));
    }

    private static void CheckDiskKind(VmDisk disk, SnapshotRequest request, bool cold, PreflightContext context)
    {
        var domain = disk.DomainName;
        if (disk.Source is null || disk.Type is not ("file" or "block"))
        {
            context.Problem(ErrorIds.UnsupportedDisk, BackupErrorCategory.InvalidArgument,
                $"Disk {disk.Target} of '{domain}' is a '{disk.Type}' disk; only file and block disks can be backed up.",
                $"Leave it out: Get-VmDisk {domain} | Where-Object Target -ne {disk.Target} | New-KvmDiskSnapshot ...");
        }
        else if (disk.Format is not ("raw" or "qcow2"))
        {
            // The way back reads raw and qcow2 copies only (a set is untrusted input): a copy in any other format
            // could never be restored or tested, so it is not made.
            context.Problem(ErrorIds.UnsupportedDisk, BackupErrorCategory.InvalidArgument,
                $"Disk {disk.Target} of '{domain}' is a '{disk.Format}' image; only raw and qcow2 disks can be backed up (and restored).",
                $"Convert it while the VM is shut off (qemu-img convert -O qcow2 {disk.Source} <new file>, then point the disk at the new file), or leave it out: Get-VmDisk {domain} | Where-Object Target -ne {disk.Target} | New-KvmDiskSnapshot ...");
        }
        else if (disk.Type == "block" && request.OverlayDirectory is null && !cold)
        {
            context.Problem(ErrorIds.UnsupportedDisk, BackupErrorCategory.InvalidArgument,
                $"Disk {disk.Target} of '{domain}' is a block device ({disk.Source}); its overlay cannot go beside it.",
                "Name a folder for the overlays with -OverlayDirectory.");
        }
        if (disk.Shareable)
        {
            context.Problem(ErrorIds.SharedDiskNotSupported, BackupErrorCategory.InvalidArgument,
                $"Disk {disk.Target} of '{domain}' is shareable (<shareable/>): other VMs, such as the other nodes of a cluster, write to '{disk.Source}' too. A snapshot would send this VM's writes to an overlay while the others go on writing to the file, and the commit would then overwrite their writes with stale blocks; even with this VM shut off, the others may write while it is copied. Nothing was done.",
                $"Back up the VM's other disks: Get-VmDisk {domain} | Where-Object {{ -not $_.Shareable }} | New-KvmDiskSnapshot | ...; back up the shared disk's data from inside the cluster (for ASM disks: RMAN), or copy it while every VM that uses it is shut off.");
        }
        if (disk.OnOverlay)
        {
            var ours = BackupNames.LooksLikeOverlay(disk.Source ?? "", request.SnapshotName);
            context.Problems.Add(ours
                ? Problem(ErrorIds.DiskAlreadyOnOverlay, BackupErrorCategory.InvalidOperation, domain,
                    $"Disk {disk.Target} of '{domain}' still writes to the overlay '{disk.Source}' of an earlier backup that did not finish.",
                    $"Run Repair-KvmBackup -DomainName {domain} to commit it back, then back up again.")
                : Problem(ErrorIds.DiskHasForeignBackingChain, BackupErrorCategory.InvalidOperation, domain,
                    $"Disk {disk.Target} of '{domain}' writes to '{disk.Source}', on top of '{disk.BackingChain[0]}': a backing chain this module did not make (a linked clone of a template, or a snapshot of another tool). A copy of '{disk.Source}' alone would not hold the whole disk. No snapshot was taken.",
                    $"To make the disk stand alone, copy the data of the images below into it: virsh blockpull {domain} {disk.Target} --wait (it writes only into '{disk.Source}'). Never blockcommit it: that writes into '{disk.BackingChain[0]}', which other clones may share. Or leave the disk out: Get-VmDisk {domain} | Where-Object Target -ne {disk.Target} | New-KvmDiskSnapshot ..."));
        }
    }

    /// <summary>Another backup of the domain running, or a run that did not finish, stops this one. Returns true
    /// for the journal of a run that is over (every disk back on its own file, its overlays gone).</summary>
    private static bool CheckJournalAndLock(string domain, PreflightContext context)
    {
        DomainLock? probe;
        try
        {
            probe = DomainLock.TryAcquire(domain);
        }
        catch (BackupException ex)
        {
            context.Problems.Add(ex); // a state folder that cannot be written: no journal, so no snapshot
            return false;
        }
        if (probe is null)
        {
            context.Problems.Add(RunErrors.BackupInProgress(domain));
            return false;
        }
        probe.Dispose();
        RunRecord? journal;
        try
        {
            journal = RunJournal.TryLoad(domain);
        }
        catch (BackupException ex)
        {
            context.Problems.Add(ex);
            return false;
        }
        if (journal is null)
            return false;
        if (journal.Phase is RunPhase.Committed or RunPhase.Finished)
        {
            var left = journal.Disks.Select(d => d.Overlay).OfType<string>().Where(File.Exists).ToList();
            if (left.Count == 0)
                return true;
            context.Problem(ErrorIds.LeftoverOverlayFile, BackupErrorCategory.ResourceExists,
                $"The overlays of run {journal.RunId} of '{domain}' are still beside its disks ({string.Join(", ", left)}); a new snapshot cannot be created over them. Every disk writes to its own file: they only hold what the VM wrote during that backup.",
                $"Keep them in a retention folder with Repair-KvmBackup -DomainName {domain} -RetentionPath <folder>, or let Repair-KvmBackup -DomainName {domain} delete them.");
            return false;
        }
        context.Problem(ErrorIds.UnfinishedBackup, BackupErrorCategory.InvalidOperation,
            $"An earlier backup of '{domain}' (run {journal.RunId}, process {journal.ProcessId}, started {journal.StartedUtc:u}) did not finish: it ended in phase {journal.Phase}.",
            $"Run Repair-KvmBackup -DomainName {domain}; it puts the domain back on its own disks and clears what was left.");
        return false;
    }

    private static void CheckOverlays(IReadOnlyList<DiskRecord> disks, DomainDescription live, PreflightContext context)
    {
        var domain = context.DomainName;
        var allSources = live.Disks.Select(d => d.Source).Concat(live.Disks.SelectMany(d => d.BackingChain)).ToHashSet(StringComparer.Ordinal);
        foreach (var disk in disks)
        {
            if (allSources.Contains(disk.Overlay))
            {
                context.Problem(ErrorIds.OverlayCollision, BackupErrorCategory.InvalidArgument,
                    $"The overlay for {disk.Target} of '{domain}' would be '{disk.Overlay}', which is already one of its disk images.",
                    "Name a folder for the overlays with -OverlayDirectory, or choose another -SnapshotName.");
            }
            else if (File.Exists(disk.Overlay) && !context.Problems.Any(p => p.Message.Contains(disk.Overlay!, StringComparison.Ordinal)))
            {
                context.Problem(ErrorIds.LeftoverOverlayFile, BackupErrorCategory.ResourceExists,
                    $"A file is already at '{disk.Overlay}', where the overlay of {disk.Target} would go; the snapshot cannot be created over it.",
                    $"If an earlier OdaKvmBackup run left it, Repair-KvmBackup -DomainName {domain} -RetentionPath <folder> moves it away. If it is from a backup by hand, finish that one (virsh blockcommit ... --active --pivot) and move the file yourself.");
            }
            var folder = Path.GetDirectoryName(disk.Overlay!)!;
            if (!Directory.Exists(folder))
            {
                context.Problem(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                    $"The overlay folder '{folder}' does not exist.", $"Create it (mkdir -p '{folder}') or name another -OverlayDirectory.");
            }
        }
    }

    private async Task CheckLeftoversAsync(string snapshotName, DomainDescription live, PreflightContext context, CancellationToken ct)
    {
        var domain = context.DomainName;
        var snapshotList = Virsh.ListSnapshotNamesAsync(domain, ct);
        var disks = live.Disks.Where(d => d.Source is not null && !d.ReadOnly).ToList();
        var jobs = disks.Select(d => Virsh.GetBlockJobAsync(domain, d.Target, ct)).ToList();
        var snapshots = await snapshotList.ConfigureAwait(false);
        await Task.WhenAll(jobs).ConfigureAwait(false);
        if (snapshots.Contains(snapshotName, StringComparer.Ordinal))
        {
            context.Problem(ErrorIds.LeftoverSnapshotMetadata, BackupErrorCategory.ResourceExists,
                $"'{domain}' still has snapshot metadata named '{snapshotName}' from an earlier run.",
                $"Run Repair-KvmBackup -DomainName {domain} (it deletes the metadata only, never files).");
        }
        foreach (var (disk, jobCall) in disks.Zip(jobs))
        {
            if (jobCall.Result is { } job)
            {
                context.Problem(ErrorIds.ActiveBlockJob, BackupErrorCategory.ResourceBusy,
                    $"Disk {disk.Target} of '{domain}' has an active block job ({job.Type}, {job.Percent} %).",
                    $"Let it finish, or run Repair-KvmBackup -DomainName {domain} if it was left by an earlier backup.");
            }
        }
    }

    /// <summary>Overlays grow with what the guest writes during the backup: ask for a tenth of each disk, at least
    /// 1 GiB (never more than the disk itself), free in each overlay folder.</summary>
    private static async Task CheckOverlaySpaceAsync(IReadOnlyList<DiskRecord> disks, PreflightContext context, CancellationToken ct)
    {
        var needed = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var disk in disks)
        {
            var folder = Path.GetDirectoryName(disk.Overlay!)!;
            if (!Directory.Exists(folder))
                continue;
            var size = (await context.ImageInfoAsync(disk.Source, ct).ConfigureAwait(false)).VirtualSize;
            needed[folder] = needed.GetValueOrDefault(folder) + Math.Min(size, Math.Max(1L << 30, size / 10));
        }
        foreach (var (folder, bytes) in needed)
        {
            var free = FileSystemPaths.FreeBytes(folder);
            if (free < bytes)
            {
                context.Problem(ErrorIds.NotEnoughSpaceForOverlays, BackupErrorCategory.ResourceUnavailable,
                    $"Only {FileSystemPaths.FormatBytes(free)} is free in '{folder}', where the overlays of '{context.DomainName}' would grow during the backup; {FileSystemPaths.FormatBytes(bytes)} is asked for.",
                    "Free space there, or put the overlays elsewhere with -OverlayDirectory.");
            }
        }
    }

    /// <summary>Waits for the guest agent's answer (asked for with the other checks, awaited last so that the
    /// problems keep their order): an agent that cannot freeze anything is a problem of the plan; any other
    /// failure of virsh is thrown.</summary>
    private static async Task CheckGuestAgentAsync(Task ping, DomainDescription live, PreflightContext context)
    {
        try
        {
            await ping.ConfigureAwait(false);
        }
        catch (VirshException ex) when (ex.Failure is VirshFailure.AgentNotConfigured or VirshFailure.AgentNotConnected || !live.HasGuestAgentChannel)
        {
            context.Problems.Add(ex);
        }
    }

    private static BackupException Problem(string id, BackupErrorCategory category, string domain, string message, string fix) =>
        new(id, category, message, fix, domain);
}
