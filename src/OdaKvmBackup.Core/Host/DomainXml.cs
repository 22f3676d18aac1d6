using System.Xml;
using System.Xml.Linq;

namespace OdaKvmBackup.Core.Host;

/// <summary>What the backup needs from a domain's XML.</summary>
internal sealed record DomainDescription(string Name, IReadOnlyList<VmDisk> Disks, bool HasGuestAgentChannel, string? GuestAgentState);

/// <summary>Parses `virsh dumpxml` output (paths may hold spaces, which the domblklist table cannot carry).</summary>
internal static class DomainXml
{
    public const string GuestAgentChannelName = "org.qemu.guest_agent.0";

    public static DomainDescription Parse(string xml, string domainState = "")
    {
        XDocument doc;
        try
        {
            doc = XDocument.Parse(xml);
        }
        catch (XmlException ex)
        {
            throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError,
                $"virsh dumpxml returned XML that cannot be read: {ex.Message}", null, null, ex);
        }
        var root = doc.Root ?? throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError, "virsh dumpxml returned an empty document.");
        var name = (string?)root.Element("name") ?? "";
        var devices = root.Element("devices");
        var disks = new List<VmDisk>();
        foreach (var disk in devices?.Elements("disk") ?? Enumerable.Empty<XElement>())
        {
            var device = (string?)disk.Attribute("device") ?? "disk";
            if (device is "cdrom" or "floppy")
                continue;
            var chain = new List<string>();
            var chainFormats = new List<string>();
            for (var store = disk.Element("backingStore"); store is not null; store = store.Element("backingStore"))
            {
                var path = SourcePath(store.Element("source"));
                if (path is null)
                    break; // <backingStore/> terminates the chain
                chain.Add(path);
                chainFormats.Add((string?)store.Element("format")?.Attribute("type") ?? "");
            }
            disks.Add(new VmDisk
            {
                DomainName = name,
                Target = (string?)disk.Element("target")?.Attribute("dev") ?? "",
                Source = SourcePath(disk.Element("source")),
                Format = (string?)disk.Element("driver")?.Attribute("type") ?? "raw",
                Device = device,
                Bus = (string?)disk.Element("target")?.Attribute("bus"),
                Type = (string?)disk.Attribute("type") ?? "file",
                BackingChain = chain,
                BackingFormats = chainFormats,
                ReadOnly = disk.Element("readonly") is not null,
                Shareable = disk.Element("shareable") is not null,
                DomainState = domainState,
            });
        }
        var agent = devices?.Elements("channel")
            .Select(c => c.Element("target"))
            .FirstOrDefault(t => (string?)t?.Attribute("name") == GuestAgentChannelName);
        return new DomainDescription(name, disks, agent is not null, (string?)agent?.Attribute("state"));
    }

    /// <summary>Points a disk of an inactive domain XML back at its own file, as after an offline commit.</summary>
    public static string ReplaceDiskSource(string xml, string target, string source, string format)
    {
        var doc = XDocument.Parse(xml);
        var disk = doc.Root?.Element("devices")?.Elements("disk")
            .FirstOrDefault(d => (string?)d.Element("target")?.Attribute("dev") == target)
            ?? throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError, $"The domain XML has no disk {target}.");
        var sourceElement = disk.Element("source") ?? throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError, $"Disk {target} has no source.");
        var attribute = sourceElement.Attribute("file") is not null ? "file" : "dev";
        sourceElement.SetAttributeValue(attribute, source);
        sourceElement.SetAttributeValue("index", null);
        disk.Element("driver")?.SetAttributeValue("type", format);
        disk.Elements("backingStore").Remove();
        return doc.ToString();
    }

    private static string? SourcePath(XElement? source) =>
        (string?)source?.Attribute("file") ?? (string?)source?.Attribute("dev") ?? (string?)source?.Attribute("name") ?? (string?)source?.Attribute("volume");
}
