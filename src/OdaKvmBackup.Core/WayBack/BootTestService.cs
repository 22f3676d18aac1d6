using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>How long a boot test waits, and what it waits for on the console of a guest without an agent.</summary>
internal sealed record BootTestOptions(TimeSpan Timeout, string ConsolePattern);

/// <summary>
/// Test-KvmBackup -Boot: proves that a set boots without changing it. Each copy is inspected first
/// (<see cref="CopyInspection"/>), then gets a temporary qcow2 overlay (qemu-img create -b copy -F format -u) in a
/// folder of the boot test's own in the scratch folder (<see cref="StateDirectory.BootTestScratchDirectory"/>, its
/// free space checked first), so the copies are only ever read; a transient domain (virsh create: gone from
/// libvirt once destroyed), its definition rebuilt by <see cref="DomainXmlRewriter"/> (a new name, no UUID, no
/// network interface, the host's emulator and firmware, its serial console in a log file), is started on the
/// overlays and watched until its guest agent answers (or, without an agent, until the console, read as it grows,
/// shows a pattern), within a bound. Then it is destroyed and its folder deleted, whatever happened. A record in
/// the state folder, written before anything is created, lets <see cref="CleanLeftoversAsync"/> finish that
/// cleanup after a killed process.
/// </summary>
internal sealed class BootTestService(HostTools tools, IOperationSink sink)
{
    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>How long destroying the domain and deleting its files may take; Ctrl+C does not cut it short.</summary>
    public static readonly TimeSpan CleanupBound = TimeSpan.FromMinutes(2);

    /// <summary>Boot-tests a set that passed its checks. What fails is recorded in the result's
    /// <see cref="BackupSetTestResult.Errors"/> (the result is output and the other sets are still tested); only a
    /// stop (Ctrl+C) ends it early, after the cleanup.</summary>
    public async Task RunAsync(BackupSetInfo set, IBackupStore store, BackupSetTestResult result, BootTestOptions options, CancellationToken ct)
    {
        if (store.IsRemote)
        {
            var remote = new BackupException(ErrorIds.BootTestNeedsLocalSet, BackupErrorCategory.InvalidOperation,
                $"The set {VerifyService.Describe(set)} is on an SSH server ({set.Location}); a boot test needs its copies on this host.",
                $"Restore it to a local folder first (Restore-KvmBackup -Destination <folder>), then boot-test that copy, or run the boot test on the server.", set.Location);
            result.Fail(remote);
            return;
        }
        var name = BackupNames.BootTestDomainName(set.DomainName);
        var scratch = StateDirectory.BootTestScratchDirectory;
        var folder = StateDirectory.BootTestFolder(name, $"The set {set.Location}");
        var record = new BootTestRecord { DomainName = name, Folder = folder, SetLocation = set.Location };
        SaveRecord(record);
        result.BootTested = true;
        result.BootTestDomain = name;
        var activity = $"Boot test of {VerifyService.Describe(set)} as {name}";
        var created = false;
        try
        {
            // Each copy is inspected before qemu-img or QEMU sees it; its overlay is made without opening it again.
            var copies = new List<(ManifestDisk Disk, InspectedCopy Copy)>();
            foreach (var disk in set.Manifest.Disks)
            {
                // Opened through the store first: a regular file reached through no link, or BackupCopyUnsafe.
                await (await store.OpenReadAsync(set.FileInSet(disk.File), ct).ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false);
                copies.Add((disk, await CopyInspection.RequireSafeAsync(tools.QemuImg, set, disk, store.Describe(set.FileInSet(disk.File)), ct).ConfigureAwait(false)));
            }
            PrivateFiles.CreateFolder(scratch);
            RequireScratchSpace(scratch, copies.Select(c => c.Copy.VirtualSize), set);
            PrivateFiles.CreateFolder(folder);
            var disks = new Dictionary<string, DomainCopyDisk>(StringComparer.Ordinal);
            foreach (var (disk, inspected) in copies)
            {
                var overlay = BackupNames.BootTestOverlayPath(folder, disk.File, $"The set {set.Location}");
                await tools.QemuImg.CreateOverlayAsync(overlay, inspected.Path, inspected.Format, inspected.VirtualSize, ct).ConfigureAwait(false);
                File.SetUnixFileMode(overlay, PrivateFiles.FileMode);
                disks[disk.Target] = new DomainCopyDisk(overlay, "qcow2", inspected.Path, inspected.Format);
            }
            var saved = System.Text.Encoding.UTF8.GetString(await store.ReadSmallFileAsync(set.FileInSet(BackupNames.DomainXmlFileName), ct).ConfigureAwait(false));
            var host = await DomainXmlRewriter.ReadHostFactsAsync(tools.Virsh, saved, set.DomainName, name, ct).ConfigureAwait(false);
            var copy = DomainXmlRewriter.Rewrite(saved, new DomainCopyRequest(name, disks, folder, [folder], DropInterfaces: true, SerialToFile: true), host);
            foreach (var note in copy.Notes.Concat(copy.LeftOut))
                sink.Verbose($"Boot test {name}: {note}");
            if (!copy.HasGuestAgentChannel && copy.ConsoleLog is null)
                throw new BackupException(ErrorIds.BootTestFailed, BackupErrorCategory.InvalidOperation,
                    $"The set {VerifyService.Describe(set)} defines neither a guest agent channel nor a serial console, so nothing can show that it booted.",
                    "Add a guest agent channel or a serial console to the VM, back it up again, and boot-test that set.", set.Location);
            var xmlFile = BackupNames.BootTestDefinitionPath(folder, name, $"The set {set.Location}");
            PrivateFiles.WriteAtomically(xmlFile, System.Text.Encoding.UTF8.GetBytes(copy.Xml));
            sink.Progress(new ProgressUpdate(ProgressIds.BootTest, null, activity, "Starting", 0));
            var console = copy.ConsoleLog is null ? null : new ConsoleLogReader(copy.ConsoleLog);
            var clock = Stopwatch.StartNew();
            created = true; // from here on, a domain may exist whatever virsh create says
            await tools.Virsh.CreateTransientAsync(xmlFile, name, ct).ConfigureAwait(false);
            var how = await WaitForBootAsync(name, copy, console, folder, options, clock, activity, ct).ConfigureAwait(false);
            if (how is null)
            {
                var timedOut = new BackupException(ErrorIds.BootTestTimedOut, BackupErrorCategory.OperationTimeout,
                    $"The set {VerifyService.Describe(set)} did not show that it booted within {options.Timeout.TotalSeconds:0} s ({(copy.HasGuestAgentChannel ? "its guest agent never answered" : $"its console never showed '{options.ConsolePattern}'")}). Console: {ConsoleTail(console)}",
                    "Look at the console output above; a slow host may need a longer -BootTimeoutSec. If the VM does not boot, restore from another set.", set.Location);
                result.Fail(timedOut);
                result.BootResult = "timed out";
            }
            else
            {
                result.BootSeconds = Math.Round(clock.Elapsed.TotalSeconds, 1);
                result.BootResult = how;
            }
        }
        catch (BackupException ex)
        {
            var failed = ex.ErrorId is ErrorIds.BootTestFailed or ErrorIds.DomainXmlNotRestorable or ErrorIds.BackupCopyUnsafe or ErrorIds.BackupCopyMissing
                or ErrorIds.NotEnoughSpaceForBootTest ? ex
                : new BackupException(ErrorIds.BootTestFailed, ex.Category, $"The boot test of {VerifyService.Describe(set)} failed: {ex.Message}", ex.RecommendedAction, set.Location, ex);
            result.Fail(failed);
            result.BootResult = "failed";
        }
        finally
        {
            sink.Progress(new ProgressUpdate(ProgressIds.BootTest, null, activity, "Cleaning up", 100, Completed: true));
            try
            {
                await CleanUpAsync(record, created).ConfigureAwait(false);
            }
            catch (BackupException leftover)
            {
                // Recorded, not thrown: a throw from this finally would replace a stop (Ctrl+C) on its way out.
                result.Fail(leftover);
            }
        }
    }

    /// <summary>The way the boot was proven, or null on timeout. Throws when the domain stops on its own, or when its
    /// scratch folder runs out of room (the overlays grow with what the guest writes).</summary>
    private async Task<string?> WaitForBootAsync(string name, DomainCopy copy, ConsoleLogReader? console, string folder, BootTestOptions options,
        Stopwatch clock, string activity, CancellationToken ct)
    {
        var pattern = new Regex(options.ConsolePattern, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        while (clock.Elapsed < options.Timeout)
        {
            sink.Progress(new ProgressUpdate(ProgressIds.BootTest, null, activity, $"Waiting for the guest to answer ({clock.Elapsed.TotalSeconds:0} s)",
                (int)(clock.Elapsed.TotalSeconds * 100 / Math.Max(1, options.Timeout.TotalSeconds))));
            // Only what the guest appended since the last round is read, and no more than the reader's cap in all.
            var appended = console?.ReadNew() ?? false;
            if (copy.HasGuestAgentChannel)
            {
                var left = (int)Math.Clamp((options.Timeout - clock.Elapsed).TotalSeconds, 1, 5);
                if (await tools.Virsh.TryPingGuestAgentAsync(name, left, ct).ConfigureAwait(false))
                    return "guest agent answered guest-ping";
            }
            else if (appended && pattern.IsMatch(console!.Window))
            {
                return $"console showed '{options.ConsolePattern}'";
            }
            var state = await tools.Virsh.GetStateAsync(name, ct).ConfigureAwait(false);
            if (state is not ("running" or "paused"))
                throw new BackupException(ErrorIds.BootTestFailed, BackupErrorCategory.InvalidResult,
                    $"The throw-away VM '{name}' stopped ({state}) before it answered. Console: {ConsoleTail(console)}",
                    "Look at the console output; if the VM does not boot, restore from another set.", name);
            if (FileSystemPaths.FreeBytes(folder) is var free && free < MinimumFreeWhileBooting)
                throw new BackupException(ErrorIds.NotEnoughSpaceForBootTest, BackupErrorCategory.ResourceUnavailable,
                    $"The boot test of '{name}' was stopped: only {FileSystemPaths.FormatBytes(free)} is left free in '{folder}', where its overlays and console log grow. Console: {ConsoleTail(console)}",
                    ScratchFix, name);
            await Task.Delay(TimeSpan.FromMilliseconds(500), ct).ConfigureAwait(false);
        }
        return null;
    }

    /// <summary>Below this much free space in its scratch folder, a running boot test is stopped before it fills it.</summary>
    public const long MinimumFreeWhileBooting = 64L << 20;

    private static readonly string ScratchFix =
        $"Free space there, or point the boot tests at a file system with room: $env:{StateDirectory.BootTestScratchVariable} = '<folder>' (for the nightly job, set it in its environment).";

    /// <summary>Each overlay grows with what the guest writes while it boots: as for a backup's overlays, a tenth of
    /// each disk is asked for, at least 1 GiB (never more than the disk itself), free in the scratch folder.</summary>
    private static void RequireScratchSpace(string scratch, IEnumerable<long> virtualSizes, BackupSetInfo set)
    {
        var needed = virtualSizes.Sum(size => Math.Min(size, Math.Max(1L << 30, size / 10)));
        var free = FileSystemPaths.FreeBytes(scratch);
        if (free < needed + MinimumFreeWhileBooting)
            throw new BackupException(ErrorIds.NotEnoughSpaceForBootTest, BackupErrorCategory.ResourceUnavailable,
                $"Only {FileSystemPaths.FormatBytes(free)} is free in '{scratch}', where the boot test of {VerifyService.Describe(set)} would put its overlays; {FileSystemPaths.FormatBytes(needed + MinimumFreeWhileBooting)} is asked for. Nothing was created.",
                ScratchFix, set.Location);
    }

    /// <summary>Destroys the domain (transient: it is then gone), deletes its folder and record; when something is
    /// left, throws BootTestLeftover, which says what is left and that the next Test-KvmBackup retries.</summary>
    private async Task CleanUpAsync(BootTestRecord record, bool created)
    {
        using var bound = new CancellationTokenSource(CleanupBound);
        var problems = new List<string>();
        if (created)
        {
            try
            {
                if ((await tools.Virsh.ListAllDomainsAsync(bound.Token).ConfigureAwait(false)).Contains(record.DomainName, StringComparer.Ordinal))
                    await DestroyIfThereAsync(record.DomainName, bound.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is BackupException or OperationCanceledException)
            {
                problems.Add($"the domain '{record.DomainName}' could not be destroyed ({ex.Message})");
            }
        }
        if (problems.Count == 0)
        {
            try
            {
                DeleteFolder(record.Folder);
                DeleteRecord(record.DomainName);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                problems.Add($"'{record.Folder}' could not be deleted ({ex.Message})");
            }
        }
        if (problems.Count > 0)
            throw new BackupException(ErrorIds.BootTestLeftover, BackupErrorCategory.ResourceBusy,
                $"The boot test left something behind: {string.Join("; ", problems)}.",
                "The next Test-KvmBackup retries the cleanup; or run: virsh destroy " + record.DomainName + "; rm -r " + record.Folder, record.DomainName);
    }

    /// <summary>
    /// Cleans up after boot tests whose process is gone (killed, or the host rebooted): destroys their transient
    /// domain (only when its disks are all in that boot test's own folder), deletes the folder and the record.
    /// Returns what it cleaned, in words.
    /// </summary>
    public async Task<IReadOnlyList<string>> CleanLeftoversAsync(CancellationToken ct)
    {
        var cleaned = new List<string>();
        if (!Directory.Exists(StateDirectory.BootTestDirectory))
            return cleaned;
        IReadOnlyList<string>? domains = null;
        foreach (var file in Directory.EnumerateFiles(StateDirectory.BootTestDirectory, "*.json").Order(StringComparer.Ordinal))
        {
            BootTestRecord? record;
            try
            {
                record = JsonSerializer.Deserialize<BootTestRecord>(await File.ReadAllBytesAsync(file, ct).ConfigureAwait(false), JsonOptions);
            }
            catch (JsonException ex)
            {
                sink.Warning($"The boot test record '{file}' cannot be read ({ex.Message}); left alone.");
                continue;
            }
            if (record is null || StillRunning(record))
                continue;
            // Its folder may be in a scratch folder of its own (ODAKVMBACKUP_BOOT_TEST_DIR): it is a boot test's when
            // it is named after the boot test's domain.
            if (!record.DomainName.Contains(BackupNames.BootTestMarker, StringComparison.Ordinal)
                || Path.GetFileName(record.Folder) != record.DomainName || !Path.IsPathFullyQualified(record.Folder))
            {
                sink.Warning($"The boot test record '{file}' names '{record.DomainName}' and '{record.Folder}', which are not a boot test's; left alone.");
                continue;
            }
            domains ??= await tools.Virsh.ListAllDomainsAsync(ct).ConfigureAwait(false);
            if (domains.Contains(record.DomainName, StringComparer.Ordinal))
            {
                IReadOnlyList<VmDisk>? disks;
                try
                {
                    disks = DomainXml.Parse(await tools.Virsh.DumpXmlAsync(record.DomainName, inactive: false, ct).ConfigureAwait(false)).Disks;
                }
                catch (VirshException ex) when (ex.Failure == VirshFailure.DomainNotFound)
                {
                    disks = null; // gone meanwhile
                }
                if (disks is not null && (disks.Count == 0 || disks.Any(d => d.Source is null || !FileSystemPaths.IsSameOrInside(d.Source, record.Folder))))
                {
                    sink.Warning($"'{record.DomainName}' has disks outside its boot test folder '{record.Folder}': it is not a leftover boot test and was left alone.");
                    continue;
                }
                if (disks is not null)
                    await DestroyIfThereAsync(record.DomainName, ct).ConfigureAwait(false);
            }
            DeleteFolder(record.Folder);
            DeleteRecord(record.DomainName);
            cleaned.Add($"the boot test '{record.DomainName}' of {record.SetLocation}, left by process {record.ProcessId} (started {record.StartedUtc:u})");
        }
        return cleaned;
    }

    /// <summary>Destroys a transient domain; one that went away meanwhile (a start that failed ends that way) is fine.</summary>
    private async Task DestroyIfThereAsync(string domain, CancellationToken ct)
    {
        try
        {
            await tools.Virsh.DestroyAsync(domain, ct).ConfigureAwait(false);
        }
        catch (VirshException ex) when (ex.Failure is VirshFailure.DomainNotFound or VirshFailure.DomainNotRunning)
        {
        }
    }

    private static bool StillRunning(BootTestRecord record)
    {
        try
        {
            using var process = Process.GetProcessById(record.ProcessId);
            return Math.Abs((process.StartTime.ToUniversalTime() - record.ProcessStartUtc).TotalSeconds) < 2;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    private static void SaveRecord(BootTestRecord record)
    {
        PrivateFiles.CreateFolder(StateDirectory.BootTestDirectory);
        PrivateFiles.WriteAtomically(StateDirectory.BootTestRecordPath(record.DomainName), JsonSerializer.SerializeToUtf8Bytes(record, JsonOptions));
    }

    private static void DeleteRecord(string domain) => PrivateFiles.Delete(StateDirectory.BootTestRecordPath(domain));

    private static void DeleteFolder(string folder)
    {
        if (Directory.Exists(folder))
            Directory.Delete(folder, recursive: true);
    }

    private static string ConsoleTail(ConsoleLogReader? console)
    {
        if (console is null)
            return "(no console log)";
        console.ReadNew();
        return console.Tail();
    }
}
