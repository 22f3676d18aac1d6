namespace OdaKvmBackup.Core.Steps;

/// <summary>A disk to put back on its own file.</summary>
internal sealed record CommitTarget(string DomainName, string Target, string Source, string Format, string? Overlay);

/// <summary>How a disk got back onto its own file.</summary>
internal enum CommitOutcome { AlreadyOnOwnFile, Committed, PivotedLeftoverJob, CommittedOffline }

/// <summary>
/// Step 5, written as a loop that looks before it acts, so the same code finishes a normal commit, a commit whose
/// pivot is not ready yet (busy guest), a job left by a killed process, a libvirtd restart, and a domain that was
/// shut off while on its overlay. It never deletes or moves a file.
/// </summary>
internal sealed class CommitService
{
    private readonly VirshClient _virsh;
    private readonly QemuImgClient _qemuImg;
    private readonly IOperationSink _sink;

    public CommitService(VirshClient virsh, QemuImgClient qemuImg, IOperationSink sink)
    {
        _virsh = virsh;
        _qemuImg = qemuImg;
        _sink = sink;
    }

    /// <summary>How many times a pivot that is not ready is retried, with back-off, before giving up.</summary>
    public int PivotAttempts { get; init; } = 8;
    public TimeSpan FirstBackOff { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan MaxBackOff { get; init; } = TimeSpan.FromSeconds(15);
    public static readonly TimeSpan DefaultConvergenceTimeout = TimeSpan.FromMinutes(15);

    /// <summary>How long a commit may take to catch up with the guest's writes before it is abandoned.</summary>
    public TimeSpan ConvergenceTimeout { get; init; } = DefaultConvergenceTimeout;
    /// <summary>How long a throttled commit may gain nothing on the guest before its limit is lifted.</summary>
    public TimeSpan StallLimit { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan VirshPivotGrace { get; init; } = TimeSpan.FromSeconds(30);

    public async Task<CommitOutcome> CommitAsync(CommitTarget disk, int bandwidthMiBps, Action<int>? percent, CancellationToken ct)
    {
        var domain = disk.DomainName;
        var pivotFailures = 0;
        var ranCommit = false;
        var pivotedJob = false;
        var backOff = FirstBackOff;
        var seenRunning = false;
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            // Asked together, in one round: each virsh call costs mostly its own start-up, and the round that
            // confirms a pivot still counts as time on the overlay. The block job is asked with them once the
            // domain was seen running (virsh refuses to be asked of one that is not: its answer is then not used);
            // the saved definition is used only once the disk is back on its own file.
            var stateCall = _virsh.GetStateAsync(domain, ct);
            var xmlCall = _virsh.DumpXmlAsync(domain, inactive: false, ct);
            var savedCall = _virsh.DumpXmlAsync(domain, inactive: true, ct);
            var jobCall = seenRunning ? _virsh.GetBlockJobAsync(domain, disk.Target, ct) : null;
            await Task.WhenAll(new[] { stateCall, xmlCall, savedCall, jobCall ?? Task.CompletedTask }).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            var state = await stateCall.ConfigureAwait(false);
            if (state is "shut off" or "crashed")
                return await CommitOfflineAsync(disk, ct).ConfigureAwait(false);
            seenRunning = true;

            var live = DomainXml.Parse(await xmlCall.ConfigureAwait(false), state);
            var current = live.Disks.FirstOrDefault(d => d.Target == disk.Target)
                ?? throw Failed(disk, $"'{domain}' has no disk {disk.Target} any more.", null);
            var job = await (jobCall ?? _virsh.GetBlockJobAsync(domain, disk.Target, ct)).ConfigureAwait(false);

            if (job is null && current.Source == disk.Source && !current.OnOverlay)
            {
                VerifyPersistentDefinition(disk, await savedCall.ConfigureAwait(false));
                return ranCommit ? CommitOutcome.Committed : pivotedJob ? CommitOutcome.PivotedLeftoverJob : CommitOutcome.AlreadyOnOwnFile;
            }
            if (job is null)
            {
                if (current.Source != disk.Overlay && !current.BackingChain.Contains(disk.Source, StringComparer.Ordinal))
                {
                    throw Failed(disk, $"Disk {disk.Target} of '{domain}' writes to '{current.Source}', which is neither its own file '{disk.Source}' nor the overlay '{disk.Overlay}'. Nothing was changed.",
                        $"Inspect it with 'virsh domblklist {domain} --details'.");
                }
                try
                {
                    ranCommit = true;
                    using var virshStop = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    var commit = _virsh.BlockCommitAsync(domain, disk.Target, disk.Source, bandwidthMiBps, percent,
                        ConvergenceTimeout + VirshPivotGrace + ToolTimeouts.Default, virshStop.Token);
                    if (!await WatchUntilReadyAsync(disk, bandwidthMiBps, commit, null, ct).ConfigureAwait(false))
                    {
                        await virshStop.CancelAsync().ConfigureAwait(false);
                        await commit.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
                        await AbandonAsync(disk, ct).ConfigureAwait(false);
                    }
                    // Ready: virsh pivots now. If it never does (its READY event lost in a libvirtd restart), the
                    // loop pivots the ready job itself.
                    if (await Task.WhenAny(commit, Task.Delay(VirshPivotGrace, ct)).ConfigureAwait(false) != commit)
                    {
                        await virshStop.CancelAsync().ConfigureAwait(false);
                        await commit.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).ConfigureAwait(false);
                        continue;
                    }
                    await commit.ConfigureAwait(false);
                    continue; // look again: the loop verifies the pivot
                }
                catch (VirshException ex) when (ex.Failure is VirshFailure.NotReadyForPivot or VirshFailure.BlockJobActive
                    or VirshFailure.Unreachable or VirshFailure.NoBaseImage or VirshFailure.NoBlockJob)
                {
                    // Someone else may have acted meanwhile (a virsh left running by a killed process): look again.
                    _sink.Verbose($"{domain} {disk.Target}: {ex.Message} (will look again)");
                    pivotFailures++;
                }
            }
            else if (!job.Type.Contains("Commit", StringComparison.OrdinalIgnoreCase))
            {
                throw Failed(disk, $"Disk {disk.Target} of '{domain}' runs a block job this module did not start ({job.Type}, {job.Percent} %).",
                    $"Let it finish or abort it (virsh blockjob {domain} {disk.Target} --abort), then run Repair-KvmBackup -DomainName {domain}.");
            }
            else if (!job.Ready)
            {
                percent?.Invoke(job.Percent);
                if (!await WatchUntilReadyAsync(disk, (int)job.BandwidthMiBps, null, percent, ct).ConfigureAwait(false))
                    await AbandonAsync(disk, ct).ConfigureAwait(false);
                continue;
            }
            else
            {
                try
                {
                    await _virsh.PivotBlockJobAsync(domain, disk.Target, ct).ConfigureAwait(false);
                    pivotedJob = true;
                    continue;
                }
                catch (VirshException ex) when (ex.Failure is VirshFailure.NotReadyForPivot or VirshFailure.Unreachable
                    or VirshFailure.NoBlockJob or VirshFailure.Other)
                {
                    _sink.Verbose($"{domain} {disk.Target}: pivot refused: {ex.Message}");
                    pivotFailures++;
                }
            }

            if (pivotFailures >= PivotAttempts)
            {
                throw new BackupException(ErrorIds.PivotNotReady, BackupErrorCategory.OperationTimeout,
                    $"Disk {disk.Target} of '{domain}' could not pivot back to '{disk.Source}' after {PivotAttempts} attempts: the guest writes faster than the commit converges. It still writes to the overlay '{disk.Overlay}', which was neither moved nor deleted.",
                    $"Run Repair-KvmBackup -DomainName {domain} when the guest is quieter, or lower its I/O; the overlay must stay where it is until then.", domain);
            }
            await Task.Delay(backOff, ct).ConfigureAwait(false);
            backOff = TimeSpan.FromTicks(Math.Min(backOff.Ticks * 2, MaxBackOff.Ticks));
        }
    }

    /// <summary>
    /// Watches a commit job until it is ready to pivot, its virsh has ended, or the job is gone. A throttled job
    /// that gains nothing on the guest's writes for <see cref="StallLimit"/> gets its limit lifted (it could never
    /// converge); returns false when the job is still not ready after <see cref="ConvergenceTimeout"/>.
    /// </summary>
    private async Task<bool> WatchUntilReadyAsync(CommitTarget disk, int bandwidthMiBps, Task? virsh, Action<int>? percent, CancellationToken ct)
    {
        var started = DateTime.UtcNow;
        var lastGain = started;
        var leastRemaining = long.MaxValue;
        var limited = bandwidthMiBps > 0;
        var seenJob = false;
        while (virsh is null || !virsh.IsCompleted)
        {
            var job = await _virsh.GetBlockJobAsync(disk.DomainName, disk.Target, ct).ConfigureAwait(false);
            // No job while our virsh runs and before any job was seen means it has not started the job yet (it
            // connects to libvirtd first), not that the job is done: keep watching.
            if (job is { Ready: true } || job is null && (virsh is null || seenJob))
                return true;
            var now = DateTime.UtcNow;
            if (job is not null)
            {
                seenJob = true;
                percent?.Invoke(job.Percent);
                if (job.End - job.Current < leastRemaining)
                {
                    leastRemaining = job.End - job.Current;
                    lastGain = now;
                }
                if (limited && now - lastGain > StallLimit)
                {
                    _sink.Warning($"The commit of {disk.Target} of '{disk.DomainName}' at {bandwidthMiBps} MiB/s does not catch up with the guest's writes; lifting the limit so that it can finish.");
                    await _virsh.SetBlockJobBandwidthAsync(disk.DomainName, disk.Target, 0, ct).ConfigureAwait(false);
                    limited = false;
                    lastGain = now;
                }
            }
            if (now - started > ConvergenceTimeout)
                return false;
            if (virsh is null)
                await Task.Delay(PollInterval, ct).ConfigureAwait(false);
            else
                await Task.WhenAny(virsh, Task.Delay(PollInterval, ct)).ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>Gives up on a commit that cannot converge: the job is aborted, so the disk simply goes on writing
    /// to its overlay (nothing is lost, nothing is moved or deleted), and the user is told how to finish later.</summary>
    private async Task AbandonAsync(CommitTarget disk, CancellationToken ct)
    {
        try
        {
            await _virsh.AbortBlockJobAsync(disk.DomainName, disk.Target, ct).ConfigureAwait(false);
        }
        catch (VirshException ex) when (ex.Failure == VirshFailure.NoBlockJob)
        {
        }
        throw new BackupException(ErrorIds.PivotNotReady, BackupErrorCategory.OperationTimeout,
            $"The commit of {disk.Target} of '{disk.DomainName}' did not catch up with the guest's writes within {ConvergenceTimeout.TotalSeconds:0} s and was stopped. The disk still writes to the overlay '{disk.Overlay}', which was neither moved nor deleted; nothing the guest wrote is lost.",
            $"Run Repair-KvmBackup -DomainName {disk.DomainName} when the guest writes less; the overlay must stay where it is until then.", disk.DomainName);
    }

    /// <summary>A shut-off domain has no QEMU to run an active commit: qemu-img commits the overlay into its
    /// backing file, then the definition is pointed back at the disk's own file and format.</summary>
    private async Task<CommitOutcome> CommitOfflineAsync(CommitTarget disk, CancellationToken ct)
    {
        var domain = disk.DomainName;
        var xml = await _virsh.DumpXmlAsync(domain, inactive: true, ct).ConfigureAwait(false);
        var current = DomainXml.Parse(xml).Disks.FirstOrDefault(d => d.Target == disk.Target);
        if (current is null)
            throw Failed(disk, $"Shut-off domain '{domain}' has no disk {disk.Target} any more. Nothing was changed.", $"Inspect it with 'virsh dumpxml --inactive {domain}'.");
        if (current.Source == disk.Source)
            return CommitOutcome.AlreadyOnOwnFile;
        if (disk.Overlay is null || current.Source != disk.Overlay)
        {
            throw Failed(disk, $"Shut-off domain '{domain}' has disk {disk.Target} on '{current.Source}', not on its own file '{disk.Source}' nor the overlay '{disk.Overlay}'. Nothing was changed.",
                $"Inspect it with 'virsh dumpxml --inactive {domain}'.");
        }
        var info = await _qemuImg.InfoAsync(disk.Overlay, ct).ConfigureAwait(false);
        if (info.BackingFile is null || FileSystemPaths.Normalize(info.BackingFile) != FileSystemPaths.Normalize(disk.Source))
        {
            throw Failed(disk, $"The overlay '{disk.Overlay}' of shut-off domain '{domain}' is backed by '{info.BackingFile}', not by '{disk.Source}'. Nothing was changed.", null);
        }
        _sink.Verbose($"{domain} is shut off: committing {disk.Overlay} into {disk.Source} with qemu-img");
        await _qemuImg.CommitAsync(disk.Overlay, ct).ConfigureAwait(false);
        var fixedXml = DomainXml.ReplaceDiskSource(xml, disk.Target, disk.Source, disk.Format);
        // The full definition names every disk of the VM: written private (0600 in the 0700 state folder, whatever
        // the umask), never in /tmp, and removed once defined.
        var folder = StateDirectory.DefinitionDirectory;
        var file = StateDirectory.NewDefinitionPath(domain);
        try
        {
            PrivateFiles.CreateFolder(folder);
            using (var stream = PrivateFiles.CreateNew(file))
            {
                stream.Write(System.Text.Encoding.UTF8.GetBytes(fixedXml));
                stream.Flush(flushToDisk: true);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw RunErrors.JournalWriteFailed(domain,
                $"'{disk.Overlay}' was committed into '{disk.Source}', but the definition that points {disk.Target} back at it cannot be written to '{file}'", ex);
        }
        try
        {
            await _virsh.DefineAsync(file, domain, ct).ConfigureAwait(false);
        }
        finally
        {
            try
            {
                PrivateFiles.Delete(file);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                _sink.Warning($"The definition '{file}' handed to virsh define could not be removed ({ex.Message}); remove it by hand.");
            }
        }
        return CommitOutcome.CommittedOffline;
    }

    private static void VerifyPersistentDefinition(CommitTarget disk, string savedXml)
    {
        var inactive = DomainXml.Parse(savedXml);
        var persistent = inactive.Disks.FirstOrDefault(d => d.Target == disk.Target);
        if (persistent is not null && persistent.Source != disk.Source)
        {
            throw Failed(disk, $"Disk {disk.Target} of '{disk.DomainName}' writes to its own file again, but its saved definition still names '{persistent.Source}'.",
                $"Fix the definition (virsh edit {disk.DomainName}) so that the disk's source is '{disk.Source}' before the domain is next started.");
        }
    }

    private static BackupException Failed(CommitTarget disk, string message, string? fix) =>
        new(ErrorIds.CommitFailed, BackupErrorCategory.InvalidResult, message, fix, disk.DomainName);
}
