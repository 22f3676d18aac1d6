using System.Globalization;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.QemuImg;
using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.Core.Backup;

/// <summary>What the cmdlets later in the same pipeline will do, so the preflight can check it before any snapshot.</summary>
public sealed record DownstreamPlan(string? Destination, bool Force, string? RetentionPath)
{
    public static readonly DownstreamPlan None = new(null, false, null);
}

public sealed record SnapshotRequest(
    string DomainName, IReadOnlyList<VmDisk> Disks, string SnapshotName, string? OverlayDirectory,
    bool CrashConsistent, DownstreamPlan Downstream);

/// <summary>The outcome of the preflight: what would be done, or every problem that stops it.</summary>
public sealed class SnapshotPlan
{
    public required SnapshotRequest Request { get; init; }
    public required string RunId { get; init; }
    public required bool Cold { get; init; }
    public required string InactiveXml { get; init; }
    public required IReadOnlyList<JournalDisk> Disks { get; init; }
    public required IReadOnlyList<string> ExcludedTargets { get; init; }
    public List<BackupException> Problems { get; } = new();
    public string DomainName => Request.DomainName;
}

/// <summary>Steps 2 and 4: one atomic, disk-only, external snapshot per domain, then its metadata deleted.</summary>
public sealed class SnapshotService
{
    private readonly VirshClient _virsh;
    private readonly QemuImgClient _qemuImg;
    private readonly Dictionary<string, ImageInfo> _imageInfo = new(StringComparer.Ordinal);

    public SnapshotService(VirshClient virsh, QemuImgClient qemuImg)
    {
        _virsh = virsh;
        _qemuImg = qemuImg;
    }

    public static string NewRunId(DateTime utcNow) => utcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);

    /// <summary>Preflight: reads only, changes nothing. Every problem found is in <see cref="SnapshotPlan.Problems"/>.</summary>
    public async Task<SnapshotPlan> PlanAsync(SnapshotRequest request, CancellationToken ct)
    {
        var domain = request.DomainName;
        var state = await _virsh.GetStateAsync(domain, ct).ConfigureAwait(false);
        var live = DomainXml.Parse(await _virsh.DumpXmlAsync(domain, inactive: false, ct).ConfigureAwait(false), state);
        var inactiveXml = await _virsh.DumpXmlAsync(domain, inactive: true, ct).ConfigureAwait(false);
        var cold = state is "shut off" or "crashed";
        var problems = new List<BackupException>();
        var journalDisks = new List<JournalDisk>();

        foreach (var piped in request.Disks)
        {
            var current = live.Disks.FirstOrDefault(d => d.Target == piped.Target);
            if (current is null || current.Source != piped.Source)
            {
                problems.Add(Problem(ErrorIds.DiskChanged, BackupErrorCategory.InvalidOperation, domain,
                    $"Disk {piped.Target} of '{domain}' is no longer '{piped.Source}' (it is now '{current?.Source ?? "gone"}').",
                    $"List the disks again: Get-VmDisk {domain} | New-KvmDiskSnapshot ..."));
                continue;
            }
            CheckDiskKind(current, request, cold, problems);
            var source = current.Source ?? "";
            journalDisks.Add(new JournalDisk
            {
                Target = current.Target,
                Source = source,
                Format = current.Format,
                Overlay = cold ? null : OverlayNaming.OverlayPath(domain, source, request.SnapshotName, request.OverlayDirectory),
            });
        }

        var runId = NewRunId(DateTime.UtcNow);
        if (request.Downstream.Destination is { } destination && !request.Downstream.Force
            && Directory.Exists(Path.Combine(destination, domain, runId)))
        {
            // A run of this domain finished within this second: take the next second rather than collide.
            await Task.Delay(1000 - DateTime.UtcNow.Millisecond, ct).ConfigureAwait(false);
            runId = NewRunId(DateTime.UtcNow);
        }

        CheckJournalAndLock(domain, problems);
        if (!cold)
        {
            CheckOverlays(domain, journalDisks, live, problems);
            await CheckLeftoversAsync(domain, request.SnapshotName, live, problems, ct).ConfigureAwait(false);
            await CheckOverlaySpaceAsync(domain, journalDisks, problems, ct).ConfigureAwait(false);
            if (!request.CrashConsistent)
                await CheckGuestAgentAsync(domain, live, problems, ct).ConfigureAwait(false);
        }
        await CheckDownstreamAsync(domain, runId, journalDisks, request.Downstream, problems, ct).ConfigureAwait(false);

        var plan = new SnapshotPlan
        {
            Request = request,
            RunId = runId,
            Cold = cold,
            InactiveXml = inactiveXml,
            Disks = journalDisks,
            ExcludedTargets = live.Disks.Where(d => d.Source is not null && !d.ReadOnly && journalDisks.All(j => j.Target != d.Target))
                .Select(d => d.Target).ToList(),
        };
        plan.Problems.AddRange(problems);
        return plan;
    }

    /// <summary>Takes the snapshot the plan describes. The caller has checked that the plan has no problems.</summary>
    public async Task<BackupRun> ExecuteAsync(SnapshotPlan plan, CancellationToken ct)
    {
        var domain = plan.DomainName;
        var request = plan.Request;
        var domainLock = DomainLock.TryAcquire(domain) ?? throw BackupInProgress(domain);
        var consistency = plan.Cold ? BackupConsistency.Cold
            : request.CrashConsistent ? BackupConsistency.CrashConsistent : BackupConsistency.Quiesced;
        var journal = new JournalEntry
        {
            DomainName = domain,
            RunId = plan.RunId,
            SnapshotName = request.SnapshotName,
            Consistency = consistency,
            Disks = plan.Disks.ToList(),
        };
        var run = new BackupRun(journal, plan.InactiveXml, domainLock);
        if (plan.Cold)
        {
            run.Register();
            return run;
        }
        try
        {
            Journal.Save(journal);
            var specs = plan.Disks.Select(d => new DiskSpec(d.Target, d.Overlay!)).ToList();
            try
            {
                await _virsh.CreateDiskSnapshotAsync(domain, request.SnapshotName, !request.CrashConsistent, specs, plan.ExcludedTargets, ct).ConfigureAwait(false);
            }
            catch (VirshException ex) when (ex.Failure == VirshFailure.Unreachable)
            {
                // libvirtd went away during the call: the snapshot may or may not exist. Look before deciding.
                if (!await AllOnOverlaysAsync(domain, plan.Disks, CancellationToken.None).ConfigureAwait(false))
                    throw;
            }
            run.SetPhase(JournalPhase.OnOverlays);
            run.Register();
        }
        catch (Exception ex)
        {
            // --atomic: a failed snapshot-create changed nothing, unless some disk did switch (checked here).
            if (ex is not OperationCanceledException && await AnyOnOverlayAsync(domain, plan.Disks).ConfigureAwait(false))
            {
                run.Register();
                throw;
            }
            run.Finish();
            throw;
        }

        try
        {
            await _virsh.DeleteSnapshotMetadataAsync(domain, request.SnapshotName, ct).ConfigureAwait(false);
        }
        catch (BackupException ex)
        {
            // The overlays are what matters; leftover metadata only blocks the next snapshot, and Repair-KvmBackup clears it.
            throw new BackupException(ErrorIds.SnapshotFailed, BackupErrorCategory.InvalidResult,
                $"The snapshot of '{domain}' was taken but its metadata could not be deleted: {ex.Message}",
                $"'{domain}' is put back on its own disks; run Repair-KvmBackup -DomainName {domain} to clear the metadata.", domain, ex);
        }
        if (!await AllOnOverlaysAsync(domain, plan.Disks, ct).ConfigureAwait(false))
        {
            throw new BackupException(ErrorIds.SnapshotFailed, BackupErrorCategory.InvalidResult,
                $"virsh reported the snapshot of '{domain}' as created, but its disks do not write to the planned overlays.",
                $"Check 'virsh domblklist {domain} --details'; run Repair-KvmBackup -DomainName {domain}.", domain);
        }
        return run;
    }

    private async Task<bool> AllOnOverlaysAsync(string domain, IReadOnlyList<JournalDisk> disks, CancellationToken ct)
    {
        var live = await _virsh.DescribeAsync(domain, ct).ConfigureAwait(false);
        return disks.All(d => live.Disks.Any(l => l.Target == d.Target && l.Source == d.Overlay));
    }

    private async Task<bool> AnyOnOverlayAsync(string domain, IReadOnlyList<JournalDisk> disks)
    {
        try
        {
            var live = await _virsh.DescribeAsync(domain, CancellationToken.None).ConfigureAwait(false);
            return disks.Any(d => live.Disks.Any(l => l.Target == d.Target && l.Source == d.Overlay));
        }
        catch (BackupException)
        {
            return true; // cannot tell: keep the journal, so that Repair-KvmBackup looks
        }
    }

    private static void CheckDiskKind(VmDisk disk, SnapshotRequest request, bool cold, List<BackupException> problems)
    {
        var domain = disk.DomainName;
        if (disk.Source is null || disk.Type is not ("file" or "block"))
        {
            problems.Add(Problem(ErrorIds.UnsupportedDisk, BackupErrorCategory.InvalidArgument, domain,
                $"Disk {disk.Target} of '{domain}' is a '{disk.Type}' disk; only file and block disks can be backed up.",
                $"Leave it out: Get-VmDisk {domain} | Where-Object Target -ne {disk.Target} | New-KvmDiskSnapshot ..."));
        }
        else if (disk.Type == "block" && request.OverlayDirectory is null && !cold)
        {
            problems.Add(Problem(ErrorIds.UnsupportedDisk, BackupErrorCategory.InvalidArgument, domain,
                $"Disk {disk.Target} of '{domain}' is a block device ({disk.Source}); its overlay cannot go beside it.",
                "Name a folder for the overlays with -OverlayDirectory."));
        }
        if (disk.OnOverlay)
        {
            var ours = OverlayNaming.LooksLikeOurOverlay(disk.Source ?? "", request.SnapshotName);
            problems.Add(ours
                ? Problem(ErrorIds.DiskAlreadyOnOverlay, BackupErrorCategory.InvalidOperation, domain,
                    $"Disk {disk.Target} of '{domain}' still writes to the overlay '{disk.Source}' of an earlier backup that did not finish.",
                    $"Run Repair-KvmBackup -DomainName {domain} to commit it back, then back up again.")
                : Problem(ErrorIds.DiskHasForeignBackingChain, BackupErrorCategory.InvalidOperation, domain,
                    $"Disk {disk.Target} of '{domain}' writes to '{disk.Source}', on top of '{disk.BackingChain[0]}': a backing chain this module did not make.",
                    "Commit or flatten that chain first (virsh blockcommit/blockpull), then back up again."));
        }
    }

    private static void CheckJournalAndLock(string domain, List<BackupException> problems)
    {
        if (BackupRun.FindActive(domain) is { } active)
        {
            problems.Add(active.OwnedByRunningPipeline
                ? BackupInProgress(domain)
                : Problem(ErrorIds.UnfinishedBackup, BackupErrorCategory.InvalidOperation, domain,
                    $"'{domain}' still writes to the overlays of run {active.RunId} in this session.",
                    $"Pipe that run's objects to Invoke-BlockCommit, or run Repair-KvmBackup -DomainName {domain}."));
            return;
        }
        var probe = DomainLock.TryAcquire(domain);
        if (probe is null)
        {
            problems.Add(BackupInProgress(domain));
            return;
        }
        probe.Dispose();
        if (Journal.TryLoad(domain) is { } journal)
        {
            problems.Add(Problem(ErrorIds.UnfinishedBackup, BackupErrorCategory.InvalidOperation, domain,
                $"An earlier backup of '{domain}' (run {journal.RunId}, process {journal.ProcessId}, started {journal.StartedUtc:u}) did not finish: it ended in phase {journal.Phase}.",
                $"Run Repair-KvmBackup -DomainName {domain}; it puts the domain back on its own disks and clears what was left."));
        }
    }

    private static void CheckOverlays(string domain, IReadOnlyList<JournalDisk> disks, DomainDescription live, List<BackupException> problems)
    {
        foreach (var group in disks.GroupBy(d => d.Overlay, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            problems.Add(Problem(ErrorIds.OverlayCollision, BackupErrorCategory.InvalidArgument, domain,
                $"Disks {string.Join(" and ", group.Select(d => d.Target))} of '{domain}' would share the overlay '{group.Key}' (their files differ only in extension).",
                "Name a folder for the overlays with -OverlayDirectory, or rename one of the files."));
        }
        var allSources = live.Disks.Select(d => d.Source).Concat(live.Disks.SelectMany(d => d.BackingChain)).ToHashSet(StringComparer.Ordinal);
        foreach (var disk in disks)
        {
            if (allSources.Contains(disk.Overlay))
            {
                problems.Add(Problem(ErrorIds.OverlayCollision, BackupErrorCategory.InvalidArgument, domain,
                    $"The overlay for {disk.Target} of '{domain}' would be '{disk.Overlay}', which is already one of its disk images.",
                    "Name a folder for the overlays with -OverlayDirectory, or choose another -SnapshotName."));
            }
            else if (File.Exists(disk.Overlay))
            {
                problems.Add(Problem(ErrorIds.LeftoverOverlayFile, BackupErrorCategory.ResourceExists, domain,
                    $"An overlay from an earlier run is still at '{disk.Overlay}'; the snapshot of {disk.Target} cannot be created over it.",
                    $"Run Repair-KvmBackup -DomainName {domain} -RetentionPath <your retention folder> to move it away (it is only moved when no disk uses it)."));
            }
            var folder = Path.GetDirectoryName(disk.Overlay!)!;
            if (!Directory.Exists(folder))
            {
                problems.Add(Problem(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound, domain,
                    $"The overlay folder '{folder}' does not exist.", $"Create it (mkdir -p '{folder}') or name another -OverlayDirectory."));
            }
        }
    }

    private async Task CheckLeftoversAsync(string domain, string snapshotName, DomainDescription live, List<BackupException> problems, CancellationToken ct)
    {
        var snapshots = await _virsh.ListSnapshotNamesAsync(domain, ct).ConfigureAwait(false);
        if (snapshots.Contains(snapshotName, StringComparer.Ordinal))
        {
            problems.Add(Problem(ErrorIds.LeftoverSnapshotMetadata, BackupErrorCategory.ResourceExists, domain,
                $"'{domain}' still has snapshot metadata named '{snapshotName}' from an earlier run.",
                $"Run Repair-KvmBackup -DomainName {domain} (it deletes the metadata only, never files)."));
        }
        foreach (var disk in live.Disks.Where(d => d.Source is not null && !d.ReadOnly))
        {
            if (await _virsh.GetBlockJobAsync(domain, disk.Target, ct).ConfigureAwait(false) is { } job)
            {
                problems.Add(Problem(ErrorIds.ActiveBlockJob, BackupErrorCategory.ResourceBusy, domain,
                    $"Disk {disk.Target} of '{domain}' has an active block job ({job.Type}, {job.Percent} %).",
                    $"Let it finish, or run Repair-KvmBackup -DomainName {domain} if it was left by an earlier backup."));
            }
        }
    }

    /// <summary>Overlays grow with what the guest writes during the backup: ask for a tenth of each disk, at least
    /// 1 GiB (never more than the disk itself), free in each overlay folder.</summary>
    private async Task CheckOverlaySpaceAsync(string domain, IReadOnlyList<JournalDisk> disks, List<BackupException> problems, CancellationToken ct)
    {
        var needed = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var disk in disks)
        {
            var folder = Path.GetDirectoryName(disk.Overlay!)!;
            if (!Directory.Exists(folder))
                continue;
            var size = (await InfoAsync(disk.Source, ct).ConfigureAwait(false)).VirtualSize;
            needed[folder] = needed.GetValueOrDefault(folder) + Math.Min(size, Math.Max(1L << 30, size / 10));
        }
        foreach (var (folder, bytes) in needed)
        {
            var free = FileSystemPaths.FreeBytes(folder);
            if (free < bytes)
            {
                problems.Add(Problem(ErrorIds.NotEnoughSpaceForOverlays, BackupErrorCategory.ResourceUnavailable, domain,
                    $"Only {FileSystemPaths.FormatBytes(free)} is free in '{folder}', where the overlays of '{domain}' would grow during the backup; {FileSystemPaths.FormatBytes(bytes)} is asked for.",
                    "Free space there, or put the overlays elsewhere with -OverlayDirectory."));
            }
        }
    }

    private async Task CheckGuestAgentAsync(string domain, DomainDescription live, List<BackupException> problems, CancellationToken ct)
    {
        try
        {
            await _virsh.PingGuestAgentAsync(domain, ct).ConfigureAwait(false);
        }
        catch (VirshException ex) when (ex.Failure is VirshFailure.AgentNotConfigured or VirshFailure.AgentNotConnected)
        {
            problems.Add(ex);
        }
        catch (VirshException ex) when (!live.HasGuestAgentChannel)
        {
            problems.Add(ex);
        }
    }

    private async Task CheckDownstreamAsync(string domain, string runId, IReadOnlyList<JournalDisk> disks, DownstreamPlan downstream,
        List<BackupException> problems, CancellationToken ct)
    {
        var diskFolders = disks.Select(d => Path.GetDirectoryName(d.Source)!).Distinct(StringComparer.Ordinal).ToList();
        if (downstream.Destination is { } destination)
        {
            if (diskFolders.FirstOrDefault(f => FileSystemPaths.IsSameOrInside(destination, f)) is { } folder)
            {
                problems.Add(Problem(ErrorIds.DestinationInsideDiskFolder, BackupErrorCategory.InvalidArgument, domain,
                    $"The destination '{destination}' is inside '{folder}', the folder of a disk of '{domain}'.",
                    "Back up to another folder, best on another file system or host."));
            }
            var set = Path.Combine(destination, domain, runId);
            if (Directory.Exists(set) && !downstream.Force)
                problems.Add(BackupSetExists(domain, set));
            long needed = 0;
            foreach (var disk in disks)
                needed += (await InfoAsync(disk.Source, ct).ConfigureAwait(false)).ActualSize;
            var free = FileSystemPaths.FreeBytes(destination);
            if (free < needed)
            {
                problems.Add(Problem(ErrorIds.NotEnoughSpaceAtDestination, BackupErrorCategory.ResourceUnavailable, domain,
                    $"Only {FileSystemPaths.FormatBytes(free)} is free at '{destination}'; the disks of '{domain}' hold {FileSystemPaths.FormatBytes(needed)}.",
                    "Free space there or choose another -Destination."));
            }
        }
        if (downstream.RetentionPath is { } retention && diskFolders.FirstOrDefault(f => FileSystemPaths.Normalize(f) == FileSystemPaths.Normalize(retention)) is { } same)
        {
            problems.Add(Problem(ErrorIds.RetentionIsDiskFolder, BackupErrorCategory.InvalidArgument, domain,
                $"The retention folder '{retention}' is the folder of a disk of '{domain}' ({same}); overlays kept there would block the next backup.",
                "Choose another -Path for Move-OverlayToRetention."));
        }
    }

    /// <summary>qemu-img info of a disk, read once per preflight (the space checks need it twice).</summary>
    private async Task<ImageInfo> InfoAsync(string path, CancellationToken ct)
    {
        if (!_imageInfo.TryGetValue(path, out var info))
            _imageInfo[path] = info = await _qemuImg.InfoAsync(path, ct).ConfigureAwait(false);
        return info;
    }

    public static BackupException BackupSetExists(string domain, string set) =>
        Problem(ErrorIds.BackupSetExists, BackupErrorCategory.ResourceExists, domain,
            $"The backup set '{set}' already exists.", "Use -Force on Copy-VmDisk to replace it, or choose another -Destination.");

    public static BackupException BackupInProgress(string domain)
    {
        var journal = Journal.TryLoad(domain);
        var who = journal is null ? "" : $" (run {journal.RunId}, process {journal.ProcessId}, started {journal.StartedUtc:u})";
        return Problem(ErrorIds.BackupInProgress, BackupErrorCategory.ResourceBusy, domain,
            $"A backup of '{domain}' is already running{who}; only one backup per VM runs at a time.",
            "Wait for it to finish; other VMs can be backed up meanwhile.");
    }

    private static BackupException Problem(string id, BackupErrorCategory category, string domain, string message, string fix) =>
        new(id, category, message, fix, domain);
}
