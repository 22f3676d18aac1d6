using System.Globalization;
using System.Text.RegularExpressions;

namespace OdaKvmBackup.Core.Host;

/// <summary>A block job as `virsh blockjob --info --raw` shows it.</summary>
internal sealed record BlockJobInfo(string Type, long Current, long End, long BandwidthMiBps = 0)
{
    /// <summary>An active commit that has copied everything waits in the ready phase for a pivot.</summary>
    public bool Ready => End > 0 && Current == End;
    public int Percent => End > 0 ? (int)(Current * 100 / End) : 0;
}

/// <summary>What `virsh domcapabilities` says the host runs a kind of domain with: the emulator's path and the
/// firmware files it offers (its loader values).</summary>
internal sealed record HostDomainCapabilities(string Emulator, IReadOnlyList<string> Loaders);

/// <summary>The virsh commands the backup uses, with their outputs parsed and their failures explained.</summary>
internal sealed partial class VirshClient
{
    private const string Program = "virsh";
    private static readonly TimeSpan UnreachableRetryBound = TimeSpan.FromSeconds(60);
    private readonly IProcessRunner _runner;

    public VirshClient(IProcessRunner runner) => _runner = runner;

    public async Task<string> DumpXmlAsync(string domain, bool inactive, CancellationToken ct) =>
        (await QueryAsync(VirshArguments.DumpXml(domain, inactive), domain, ct).ConfigureAwait(false)).StandardOutput;

    public async Task<DomainDescription> DescribeAsync(string domain, CancellationToken ct)
    {
        var state = await GetStateAsync(domain, ct).ConfigureAwait(false);
        return DomainXml.Parse(await DumpXmlAsync(domain, inactive: false, ct).ConfigureAwait(false), state);
    }

    /// <summary>`virsh domcapabilities` for a virt type (kvm, qemu), arch and machine: the host's own emulator and
    /// firmware, which a definition rebuilt from a backup set uses instead of the set's.</summary>
    public async Task<HostDomainCapabilities> DomainCapabilitiesAsync(string virtType, string? arch, string? machine, CancellationToken ct) =>
        ParseDomainCapabilities((await QueryAsync(VirshArguments.DomainCapabilities(virtType, arch, machine), null, ct).ConfigureAwait(false)).StandardOutput);

    public static HostDomainCapabilities ParseDomainCapabilities(string xml)
    {
        try
        {
            var root = System.Xml.Linq.XDocument.Parse(xml).Root;
            var emulator = root?.Element("path")?.Value.Trim();
            if (root?.Name.LocalName != "domainCapabilities" || string.IsNullOrEmpty(emulator) || !emulator.StartsWith('/'))
                throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError, "virsh domcapabilities returned no emulator path.");
            var loaders = root.Element("os")?.Element("loader")?.Elements("value").Select(v => v.Value.Trim()).Where(v => v.StartsWith('/')).ToList() ?? [];
            return new HostDomainCapabilities(emulator, loaders);
        }
        catch (System.Xml.XmlException ex)
        {
            throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError, $"virsh domcapabilities returned XML that cannot be read: {ex.Message}", null, null, ex);
        }
    }

    /// <summary>running, paused, shut off, ...</summary>
    public async Task<string> GetStateAsync(string domain, CancellationToken ct) =>
        (await QueryAsync(VirshArguments.DomState(domain), domain, ct).ConfigureAwait(false)).StandardOutput.Trim();

    public async Task<IReadOnlyList<string>> ListAllDomainsAsync(CancellationToken ct) =>
        Lines((await QueryAsync(VirshArguments.ListAllDomains(), null, ct).ConfigureAwait(false)).StandardOutput);

    /// <summary>Domains with a QEMU process (running, paused ...): the ones that have a live definition.</summary>
    public async Task<IReadOnlyList<string>> ListRunningDomainsAsync(CancellationToken ct) =>
        Lines((await QueryAsync(VirshArguments.ListRunningDomains(), null, ct).ConfigureAwait(false)).StandardOutput);

    public async Task<IReadOnlyList<string>> ListSnapshotNamesAsync(string domain, CancellationToken ct) =>
        Lines((await QueryAsync(VirshArguments.ListSnapshotNames(domain), domain, ct).ConfigureAwait(false)).StandardOutput);

    public async Task PingGuestAgentAsync(string domain, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.AgentPing(domain), domain, null, ct).ConfigureAwait(false);

    public async Task CreateDiskSnapshotAsync(string domain, string snapshotName, bool quiesce,
        IReadOnlyList<DiskSpec> overlays, IReadOnlyList<string> excludedTargets, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.SnapshotCreate(domain, snapshotName, quiesce, overlays, excludedTargets), domain, null, ct).ConfigureAwait(false);

    public async Task DeleteSnapshotMetadataAsync(string domain, string snapshotName, CancellationToken ct) =>
        await QueryAsync(VirshArguments.SnapshotDeleteMetadata(domain, snapshotName), domain, ct).ConfigureAwait(false);

    /// <summary>The block job on a disk, or null when there is none.</summary>
    public async Task<BlockJobInfo?> GetBlockJobAsync(string domain, string target, CancellationToken ct) =>
        ParseBlockJob((await QueryAsync(VirshArguments.BlockJobInfoRaw(domain, target), domain, ct).ConfigureAwait(false)).StandardOutput);

    /// <summary>Runs `blockcommit --active --verbose --pivot`; <paramref name="percent"/> receives the progress virsh prints.</summary>
    public async Task BlockCommitAsync(string domain, string target, string baseFile, int bandwidthMiBps, Action<int>? percent, TimeSpan timeout, CancellationToken ct)
    {
        void OnStderr(string line)
        {
            var p = ParseProgressPercent(line);
            if (p is not null)
                percent?.Invoke(p.Value);
        }
        await RunOnceAsync(VirshArguments.BlockCommitActivePivot(domain, target, baseFile, bandwidthMiBps), domain, OnStderr, ct, timeout).ConfigureAwait(false);
    }

    public async Task PivotBlockJobAsync(string domain, string target, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.BlockJobPivot(domain, target), domain, null, ct).ConfigureAwait(false);

    public async Task SetBlockJobBandwidthAsync(string domain, string target, int bandwidthMiBps, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.BlockJobSetBandwidth(domain, target, bandwidthMiBps), domain, null, ct).ConfigureAwait(false);

    public async Task AbortBlockJobAsync(string domain, string target, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.BlockJobAbort(domain, target), domain, null, ct).ConfigureAwait(false);

    public async Task DefineAsync(string xmlFile, string domain, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.Define(xmlFile), domain, null, ct).ConfigureAwait(false);

    public async Task CreateTransientAsync(string xmlFile, string domain, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.CreateTransient(xmlFile), domain, null, ct).ConfigureAwait(false);

    public async Task StartAsync(string domain, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.Start(domain), domain, null, ct).ConfigureAwait(false);

    public async Task DestroyAsync(string domain, CancellationToken ct) =>
        await RunOnceAsync(VirshArguments.Destroy(domain), domain, null, ct).ConfigureAwait(false);

    /// <summary>True when the guest agent answered guest-ping within <paramref name="seconds"/>; false when it is not
    /// connected yet or did not answer. Other failures (the domain is gone) throw.</summary>
    public async Task<bool> TryPingGuestAgentAsync(string domain, int seconds, CancellationToken ct)
    {
        try
        {
            await RunOnceAsync(VirshArguments.AgentPing(domain, seconds), domain, null, ct).ConfigureAwait(false);
            return true;
        }
        catch (VirshException ex) when (ex.Failure is VirshFailure.AgentNotConnected or VirshFailure.Other && !ex.Message.Contains("not running", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
    }

    /// <summary>Parses `blockjob --info --raw`: " type=Active Block Commit\n bandwidth=0\n cur=N\n end=M".</summary>
    public static BlockJobInfo? ParseBlockJob(string output)
    {
        var values = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => l.Split('=', 2))
            .Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        if (!values.TryGetValue("type", out var type))
            return null;
        long Number(string key) => values.TryGetValue(key, out var v) && long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0;
        return new BlockJobInfo(type, Number("cur"), Number("end"), Number("bandwidth"));
    }

    /// <summary>Reads "Block commit: [ 42 %]" or "[42.17 %]" (old and new libvirt) from a progress line.</summary>
    public static int? ParseProgressPercent(string line)
    {
        var m = ProgressPattern().Match(line);
        return m.Success ? (int)double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : null;
    }

    [GeneratedRegex(@"\[\s*(\d+(?:\.\d+)?)\s*%\]")]
    private static partial Regex ProgressPattern();

    private static string[] Lines(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Read-only or idempotent commands: retried while libvirtd is unreachable (e.g. restarting).</summary>
    private async Task<ProcessResult> QueryAsync(string[] args, string? domain, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + UnreachableRetryBound;
        var delay = TimeSpan.FromMilliseconds(250);
        while (true)
        {
            try
            {
                return await RunOnceAsync(args, domain, null, ct).ConfigureAwait(false);
            }
            catch (VirshException ex) when (ex.Failure == VirshFailure.Unreachable && DateTime.UtcNow < deadline)
            {
                await Task.Delay(delay, ct).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(4).Ticks));
            }
        }
    }

    private async Task<ProcessResult> RunOnceAsync(string[] args, string? domain, Action<string>? onStderr, CancellationToken ct, TimeSpan? timeout = null)
    {
        var result = await _runner.RunAsync(Program, args, onStderr, ct, timeout).ConfigureAwait(false);
        if (result.ExitCode != 0)
            throw ToException(args, result, domain);
        return result;
    }

    public static VirshException ToException(IReadOnlyList<string> args, ProcessResult result, string? domain)
    {
        var failure = VirshErrors.Classify(result.StandardError);
        var said = VirshErrors.Message(result.StandardError);
        var command = args.Count > 0 ? args[0] : "";
        var commandLine = CliWrapProcessRunner.FormatCommandLine(Program, args);
        var (id, category, message, fix) = failure switch
        {
            VirshFailure.DomainNotFound => (ErrorIds.DomainNotFound, BackupErrorCategory.ObjectNotFound,
                $"There is no domain named '{domain}' on this host (virsh: {said}).",
                "Check the name with 'virsh list --all' (names are case-sensitive)."),
            VirshFailure.Unreachable => (ErrorIds.LibvirtUnreachable, BackupErrorCategory.ConnectionError,
                $"Cannot reach libvirtd (virsh {command}: {said}).",
                "Start libvirtd and run as root (or a user allowed on qemu:///system), then try again."),
            VirshFailure.PermissionDenied => (ErrorIds.LibvirtPermissionDenied, BackupErrorCategory.PermissionDenied,
                $"This user may not use libvirt (virsh {command}: {said}).",
                "Run as root (sudo), or as a user allowed on qemu:///system (the libvirt group, or polkit rules)."),
            VirshFailure.AgentNotConfigured => (ErrorIds.AgentNotConfigured, BackupErrorCategory.NotInstalled,
                $"The domain '{domain}' has no qemu-guest-agent channel, so its file systems cannot be frozen for a consistent snapshot (virsh: {said}).",
                "Add the channel (virsh edit: <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>), install and start qemu-guest-agent in the guest; or back up without a freeze with -CrashConsistent."),
            VirshFailure.AgentNotConnected => (ErrorIds.AgentNotConnected, BackupErrorCategory.ResourceUnavailable,
                $"The qemu-guest-agent of '{domain}' does not answer, so its file systems cannot be frozen (virsh: {said}).",
                $"Start it inside the guest (systemctl enable --now qemu-guest-agent) and check with: virsh qemu-agent-command {domain} '{{\"execute\":\"guest-ping\"}}'. Or back up without a freeze with -CrashConsistent."),
            VirshFailure.FreezeDeniedBySelinux => (ErrorIds.FreezeDeniedBySelinux, BackupErrorCategory.PermissionDenied,
                $"The guest agent of '{domain}' could not freeze its file systems: SELinux in the guest denied it (virsh: {said}).",
                "Inside the guest run: setsebool -P virt_qemu_ga_read_nonsecurity_files 1 (Oracle Doc ID 3087488.1), then start the backup again."),
            VirshFailure.FreezeFailed => (ErrorIds.FreezeFailed, BackupErrorCategory.InvalidResult,
                $"The guest agent of '{domain}' could not freeze its file systems (virsh: {said}).",
                "Check qemu-guest-agent's log inside the guest; fsfreeze hooks that fail also stop the freeze. Or back up without a freeze with -CrashConsistent."),
            VirshFailure.VssVolumeFailed => (ErrorIds.VssVolumeFailed, BackupErrorCategory.InvalidResult,
                $"The Windows guest '{domain}' could not freeze: VSS did not add a volume to its snapshot set (virsh: {said}).",
                "Inside the guest: check 'vssadmin list shadowstorage' (the volume needs shadow storage) and 'vssadmin list writers', make sure the services 'Volume Shadow Copy' and 'QEMU Guest Agent VSS Provider' can start, and read the Application event log (sources VSS and QEMU Guest Agent). As a last resort back up without a freeze with -CrashConsistent."),
            VirshFailure.VssWriterFailed => (ErrorIds.VssWriterFailed, BackupErrorCategory.InvalidResult,
                $"The Windows guest '{domain}' could not freeze: a VSS writer failed (virsh: {said}).",
                "Inside the guest run 'vssadmin list writers', restart the service of any writer not in state Stable with no error (for SQL Server: SQLWriter), then back up again. As a last resort back up without a freeze with -CrashConsistent."),
            VirshFailure.VssFreezeTimedOut => (ErrorIds.VssFreezeTimedOut, BackupErrorCategory.OperationTimeout,
                $"The Windows guest '{domain}' could not hold its writes long enough for the snapshot: VSS limits a freeze to 10 seconds (virsh: {said}).",
                "Inside the guest run 'vssadmin list writers' and restart the service of any writer that is not Stable (a slow writer holds the freeze up), read the Application event log (source VSS), and back up when the guest is less busy or its disks answer faster. As a last resort back up without a freeze with -CrashConsistent."),
            VirshFailure.VssProviderFailed => (ErrorIds.VssProviderFailed, BackupErrorCategory.NotInstalled,
                $"The Windows guest '{domain}' could not freeze: qemu-guest-agent's VSS provider is missing or failed (virsh: {said}).",
                "Inside the guest reinstall qemu-guest-agent from the virtio-win ISO with its VSS provider (or run 'qemu-ga.exe -s vss-install' as administrator), check that the 'QEMU Guest Agent VSS Provider' and 'Volume Shadow Copy' services can start; as a last resort back up without a freeze with -CrashConsistent."),
            _ => (ErrorIds.VirshFailed, BackupErrorCategory.InvalidResult,
                $"virsh {command} failed{(domain is null ? "" : $" for '{domain}'")} with exit code {result.ExitCode}: {said}",
                (string?)null),
        };
        return new VirshException(commandLine, result.ExitCode, result.StandardError, failure, message, id, category, fix, domain);
    }
}
