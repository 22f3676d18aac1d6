namespace OdaKvmBackup.Core.Host;

/// <summary>What a virsh failure means, read from its stderr (virsh runs with LC_ALL=C).</summary>
public enum VirshFailure
{
    Other,
    DomainNotFound,
    Unreachable,
    PermissionDenied,
    AgentNotConfigured,
    AgentNotConnected,
    FreezeDeniedBySelinux,
    FreezeFailed,
    /// <summary>Windows guest: VSS could not add a volume to its snapshot set.</summary>
    VssVolumeFailed,
    /// <summary>Windows guest: a VSS writer failed or did not answer.</summary>
    VssWriterFailed,
    /// <summary>Windows guest: VSS could not hold writes long enough (its freeze is limited to 10 s).</summary>
    VssFreezeTimedOut,
    /// <summary>Windows guest: qemu-ga's VSS provider is missing or broken.</summary>
    VssProviderFailed,
    SnapshotExists,
    OverlayFileExists,
    BlockJobActive,
    NotReadyForPivot,
    NoBaseImage,
    NoBlockJob,
    DomainNotRunning,
    NoSpace,
}

internal static class VirshErrors
{
    public static VirshFailure Classify(string stderr)
    {
        bool Has(string s) => stderr.Contains(s, StringComparison.OrdinalIgnoreCase);
        if (Has("Domain not found") || Has("failed to get domain"))
            return VirshFailure.DomainNotFound;
        if ((Has("Failed to connect socket") || Has("authentication failed") || Has("access denied")) && (Has("Permission denied") || Has("access denied") || Has("authentication failed")))
            return VirshFailure.PermissionDenied;
        if (Has("failed to connect to the hypervisor") || Has("Failed to connect socket") || Has("Disconnected from")
            || Has("End of file while reading data") || Has("Cannot recv data") || Has("Cannot write data") || Has("client socket is closed"))
            return VirshFailure.Unreachable;
        if (Has("guest agent is not configured"))
            return VirshFailure.AgentNotConfigured;
        if (Has("guest agent is not connected") || Has("Guest agent is not responding") || Has("Guest agent disappeared"))
            return VirshFailure.AgentNotConnected;
        if (Has("already exists and is not a block device"))
            return VirshFailure.OverlayFileExists;
        if (Has("guest-fsfreeze") && Has("Permission denied"))
            return VirshFailure.FreezeDeniedBySelinux;
        // qemu-ga's Windows VSS requester (qga/vss-win32/requester.cpp) says these.
        if (Has("to snapshot set") && Has("failed to add"))
            return VirshFailure.VssVolumeFailed;
        if (Has("couldn't hold writes") || Has("couldn't receive Frozen event") || Has("DoSnapshotSet exited without Frozen event"))
            return VirshFailure.VssFreezeTimedOut;
        if (Has("failed to gather writer") || Has("failed to prepare for backup") || Has("failed to add component") || Has("writer metadata"))
            return VirshFailure.VssWriterFailed;
        if (Has("VSS provider") || Has("qga-vss") || Has("failed to create VSS backup components") || Has("failed to initialize for backup")
            || Has("failed to set backup context") || Has("failed to start snapshot set") || Has("failed to do snapshot set"))
            return VirshFailure.VssProviderFailed;
        if (Has("guest-fsfreeze") || Has("fsfreeze is limited") || Has("failed to freeze") || Has("fsfreeze hook"))
            return VirshFailure.FreezeFailed;
        if (Has("domain moment") && Has("already exists") || Has("snapshot") && Has("already exists"))
            return VirshFailure.SnapshotExists;
        if (Has("not ready for pivot"))
            return VirshFailure.NotReadyForPivot;
        if (Has("already in active block job") || Has("block copy still active"))
            return VirshFailure.BlockJobActive;
        // "could not find image X beneath Y" is the --base form: the disk is no longer on that chain.
        if (Has("could not find base image") || Has("could not find image"))
            return VirshFailure.NoBaseImage;
        if (Has("does not have an active block job") || Has("No current block job"))
            return VirshFailure.NoBlockJob;
        if (Has("domain is not running"))
            return VirshFailure.DomainNotRunning;
        if (Has("No space left on device"))
            return VirshFailure.NoSpace;
        return VirshFailure.Other;
    }

    /// <summary>The text after "error: " on each stderr line, joined: libvirt's own words for the user.</summary>
    public static string Message(string stderr)
    {
        var lines = stderr.Replace("\r", "\n", StringComparison.Ordinal).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => l.StartsWith("error:", StringComparison.OrdinalIgnoreCase))
            .Select(l => l["error:".Length..].Trim())
            .ToList();
        return lines.Count > 0 ? string.Join(" ", lines) : stderr.Trim();
    }
}
